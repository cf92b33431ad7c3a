from __future__ import annotations

import math

import lightning as L
import pytest
import torch

from lit_sft.training.schedules import check_schedule, warmup_cosine
from train import train

NORMS: list[float] = []
LRS: list[float] = []


class RecordOptimizerStep(L.Callback):
    """Records the gradient norm and learning rate the optimizer is about to step with."""

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        grads = [p.grad for p in pl_module.parameters() if p.grad is not None]
        NORMS.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))
        LRS.append(optimizer.param_groups[0]["lr"])


def test_warmup_then_cosine_decay() -> None:
    values = [warmup_cosine(step, 4, 20, 0.1) for step in range(21)]
    assert values[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert values[4] == 1.0 and values[20] == pytest.approx(0.1)
    assert values[12] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert all(a >= b for a, b in zip(values[4:], values[5:], strict=False))
    # Past the end it stays at the floor; a one-step decay is already at the floor.
    assert warmup_cosine(30, 4, 20, 0.1) == pytest.approx(0.1)
    assert warmup_cosine(1, 0, 1, 0.0) == pytest.approx(0.0)


def test_unknown_schedule_names_the_valid_ones() -> None:
    with pytest.raises(
        ValueError, match=r"^unknown lr_schedule 'linear'; valid: constant, cosine$"
    ):
        check_schedule("linear")
    check_schedule("cosine")


@pytest.mark.parametrize(("clip", "schedule"), [(None, "constant"), (1e-3, "cosine")])
def test_clipping_and_schedule_reach_the_optimizer(tiny_config, clip, schedule) -> None:
    NORMS.clear()
    LRS.clear()
    cfg = tiny_config(
        "trainer.max_steps=6",
        "module.lr=1e-3",
        f"module.grad_clip={'null' if clip is None else clip}",
        f"module.lr_schedule={schedule}",
        "module.warmup_steps=2",
        "+callbacks.record._target_=test_sft_module.RecordOptimizerStep",
    )
    train(cfg)
    assert len(NORMS) == 6
    if clip is None:
        assert min(NORMS) > 1e-2 and LRS == [1e-3] * 6
    else:
        assert max(NORMS) <= clip * 1.0001
        # Warmup over 2 steps, then cosine over the 4 left to 0.1 x lr (0.1 + 0.45 (1 + cos pi p)).
        assert list(LRS) == pytest.approx([5e-4, 1e-3, 1e-3, 8.681981e-4, 5.5e-4, 2.318019e-4])
