from __future__ import annotations

import json
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from train import train


def scalars(run_dir: Path, tag: str) -> list[tuple[int, float]]:
    events = EventAccumulator(str(run_dir / "tb"))
    events.Reload()
    return [(e.step, e.value) for e in events.Scalars(tag)]


def test_tiny_run_learns_and_writes_a_complete_run_folder(tiny_config, tmp_path: Path) -> None:
    cfg = tiny_config(
        "module.lr=3e-3",
        "trainer.max_steps=30",
        "trainer.val_check_interval=10",
        "trainer.limit_val_batches=3",
    )
    summary = train(cfg)
    run_dir = Path(cfg.run_dir)

    val = scalars(run_dir, "val/loss")
    # Step 0 is the untrained model; then Lightning logs each validation at the count of batches
    # stepped before the one that triggered it (9, 19, 29).
    assert [step for step, _ in val] == [0, 9, 19, 29]
    assert val[-1][1] < 0.6 * val[0][1]
    assert len(scalars(run_dir, "train/loss")) == 30
    assert scalars(run_dir, "val/response_loss")

    written = json.loads((run_dir / "summary.json").read_text())
    assert written["status"] == "finished" and written["steps"] == 30
    for key in (
        "train_loss",
        "val_loss",
        "tokens",
        "train_tokens_per_sec",
        "peak_memory_mb",
        "wall_time_s",
    ):
        assert written[key] > 0, key
    assert written["val_loss"] == summary["val_loss"] == pytest.approx(val[-1][1], rel=1e-6)
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert list((run_dir / "checkpoints").glob("best-step*.ckpt"))
    assert (run_dir / "model.safetensors").is_file() and (run_dir / "config.json").is_file()
    served = ("generation_config.json", "vocab.json", "merges.txt", "tokenizer_config.json")
    assert all((run_dir / name).is_file() for name in served)  # tests/test_export.py: contents
