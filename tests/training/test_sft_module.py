from __future__ import annotations

import lightning as L
import pytest
import torch
from safetensors.torch import load_file

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
