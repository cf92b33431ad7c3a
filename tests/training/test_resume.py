from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch
from safetensors.torch import load_file

from train import train

RUN = [
    "data.synthetic_size=100",
    "trainer.max_steps=14",
    "trainer.val_check_interval=3",
    "module.lr=1e-3",
]


class CrashAt(L.Callback):
    """Kills a run at the start of step `step`, as a pre-emption would."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            raise RuntimeError(f"simulated crash at step {self.step}")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict[str, torch.Tensor]:
    from conftest import TINY_RUN, compose_config

    run_dir = tmp_path_factory.mktemp("uninterrupted")
    train(compose_config([*TINY_RUN, *RUN], run_dir))
    return load_file(run_dir / "model.safetensors")


@pytest.mark.slow
@pytest.mark.parametrize("crash_step", [7, 13])  # mid first epoch (10 batches), in the second
def test_killed_and_resumed_run_ends_with_the_same_weights(
    tiny_config, tmp_path: Path, uninterrupted, crash_step: int
) -> None:
    run_dir = tmp_path / "run"
    crashing = tiny_config(
        *RUN,
        "+callbacks.crash._target_=test_resume.CrashAt",
        f"+callbacks.crash.step={crash_step}",
        run_dir=run_dir,
    )
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(crashing)
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "failed"
    resumed = train(tiny_config(*RUN, "ckpt_path=last", run_dir=run_dir))
    assert resumed["steps"] == 14
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "finished"
    weights = load_file(run_dir / "model.safetensors")
    assert weights.keys() == uninterrupted.keys()
    for name, tensor in weights.items():
        assert (tensor - uninterrupted[name]).abs().max() <= 1e-6, name
