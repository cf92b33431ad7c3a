from __future__ import annotations

import lightning as L
import pytest
import torch

from train import train

NORMS: list[float] = []
LRS: list[float] = []


class RecordOptimizerStep(L.Callback):
    """Records the gradient norm and learning rate the optimizer is about to step with."""

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        grads = [p.grad for p in pl_module.parameters() if p.grad is not None]
        NORMS.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))
        LRS.append(optimizer.param_groups[0]["lr"])


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
