"""When the resumable checkpoint is written, and which one `ckpt_path=last` picks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from lit_sft.cli.train import train
from lit_sft.run_dir import RunDir
from lit_sft.training import callbacks
from lit_sft.training.callbacks import ResumeCheckpoint
from lit_sft.training.fit import resume_path


def test_by_time_it_is_due_once_the_interval_has_passed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    checkpoint = ResumeCheckpoint(tmp_path / "last.ckpt", every_minutes=10)
    checkpoint._saved_at = 1000.0
    now = {"t": 1000.0 + 599.9}
    monkeypatch.setattr(callbacks.time, "monotonic", lambda: now["t"])
    assert not checkpoint._due(step=7)
    now["t"] = 1000.0 + 600.0
    assert checkpoint._due(step=7)
    assert not ResumeCheckpoint(tmp_path / "x.ckpt", every_minutes=None)._due(step=7)


def test_by_steps_it_is_due_on_multiples_whatever_the_clock(tmp_path: Path) -> None:
    checkpoint = ResumeCheckpoint(tmp_path / "last.ckpt", every_minutes=0, every_n_train_steps=3)
    assert [step for step in range(1, 10) if checkpoint._due(step)] == [3, 6, 9]


def test_a_run_shorter_than_the_interval_saves_once_at_its_end(tiny_config) -> None:
    cfg = tiny_config("trainer.max_steps=5")  # every 10 minutes: no periodic save in 5 steps
    train(cfg)
    run = RunDir(cfg.run_dir)
    assert torch.load(run.last_checkpoint, weights_only=False)["global_step"] == 5
    assert sorted(p.name for p in run.checkpoints.iterdir()) == ["last.ckpt"]


def test_a_run_ending_on_a_periodic_save_writes_it_once(
    tiny_config, monkeypatch: pytest.MonkeyPatch
) -> None:
    saved: list[int] = []
    save = ResumeCheckpoint._save

    def record(self: ResumeCheckpoint, trainer) -> None:
        saved.append(trainer.global_step)
        save(self, trainer)

    monkeypatch.setattr(ResumeCheckpoint, "_save", record)
    train(tiny_config("trainer.max_steps=4", "callbacks.resume_checkpoint.every_n_train_steps=2"))
    assert saved == [2, 4]


def test_last_means_the_newer_of_the_two_resumable_checkpoints(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    assert resume_path("last", tmp_path) is None  # nothing yet: a fresh start
    assert resume_path(None, tmp_path) is None
    assert resume_path("some/where.ckpt", tmp_path) == "some/where.ckpt"
    run.checkpoints.mkdir()
    run.last_checkpoint.write_bytes(b"")
    assert resume_path("last", tmp_path) == str(run.last_checkpoint)
    run.interrupted_checkpoint.write_bytes(b"")
    os.utime(run.last_checkpoint, ns=(1, 1))
    assert resume_path("last", tmp_path) == str(run.interrupted_checkpoint)
    os.utime(run.interrupted_checkpoint, ns=(0, 0))
    assert resume_path("last", tmp_path) == str(run.last_checkpoint)
