from __future__ import annotations

import math

import lightning as L
import pytest
import torch
from safetensors.torch import load_file

from lit_sft.training.schedules import warmup_cosine
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
        assert LRS[:2] == pytest.approx([5e-4, 1e-3]) and LRS[-1] < LRS[2]


FLAGS: list[bool] = []


class RecordCheckpointing(L.Callback):
    def on_train_start(self, trainer, pl_module) -> None:
        FLAGS.append(pl_module.model.activation_checkpointing)


def test_activation_checkpointing_trains_the_same_weights(tiny_config, tmp_path) -> None:
    FLAGS.clear()
    weights = []
    for flag in ("false", "true"):
        run_dir = tmp_path / flag
        cfg = tiny_config(
            "trainer.max_steps=3",
            "data.group_by_length=true",
            f"module.activation_checkpointing={flag}",
            "+callbacks.record._target_=test_sft_module.RecordCheckpointing",
            run_dir=run_dir,
        )
        train(cfg)
        weights.append(load_file(run_dir / "model.safetensors"))
    assert FLAGS == [False, True]
    assert weights[0].keys() == weights[1].keys()
    for name, tensor in weights[0].items():
        torch.testing.assert_close(weights[1][name], tensor, rtol=0, atol=0, msg=name)
