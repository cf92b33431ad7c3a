from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.config import REPO, TINY_RUN, scalars

RUN = [
    *TINY_RUN,
    "data.shuffle=false",
    "trainer.max_steps=6",
    "trainer.val_check_interval=3",
    "trainer.accelerator=cpu",
    "module.lr=1e-3",
    "hydra.job.chdir=false",
]


def run_train(run_dir: Path, *overrides: str) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "train.py", *RUN, *overrides, f"hydra.run.dir={run_dir}"]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.slow
def test_two_process_ddp_follows_the_single_process_loss_trajectory(tmp_path: Path) -> None:
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    run_train(single, "data.batch_size=8")
    run_train(ddp, "trainer=ddp", "trainer.devices=2", "data.batch_size=4")
    single_losses = [value for _, value in scalars(single, "train/loss")]
    ddp_losses = [value for _, value in scalars(ddp, "train/loss")]
    assert len(single_losses) == len(ddp_losses) == 6
    for one, two in zip(single_losses, ddp_losses, strict=True):
        assert abs(one - two) <= 1e-5
    single_val = [value for _, value in scalars(single, "val/loss")]
    ddp_val = [value for _, value in scalars(ddp, "val/loss")]
    assert single_val == pytest.approx(ddp_val, abs=1e-5)


@pytest.mark.slow
def test_lora_under_ddp_follows_the_single_process_loss_trajectory(tmp_path: Path) -> None:
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    lora = ["adapter=lora", "adapter.rank=4", "adapter.dropout=0.0", "module.lr=1e-2"]
    run_train(single, *lora, "data.batch_size=8")
    run_train(ddp, *lora, "trainer=ddp", "trainer.devices=2", "data.batch_size=4")
    single_losses = [value for _, value in scalars(single, "train/loss")]
    ddp_losses = [value for _, value in scalars(ddp, "train/loss")]
    assert len(single_losses) == len(ddp_losses) == 6
    assert single_losses[-1] < single_losses[0] - 0.01  # the adapters do learn
    for one, two in zip(single_losses, ddp_losses, strict=True):
        assert abs(one - two) <= 1e-5
