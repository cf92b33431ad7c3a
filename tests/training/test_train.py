from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from tests.helpers.callbacks import read_batch_log
from tests.helpers.config import scalars
from train import train


def logged_hparams(run_dir: Path) -> dict[str, object]:
    """The hyperparameters in TensorBoard's HParams view of a run."""
    events = EventAccumulator(str(run_dir / "tb"))
    events.Reload()
    metadata = events.SummaryMetadata("_hparams_/session_start_info")
    data = plugin_data_pb2.HParamsPluginData.FromString(metadata.plugin_data.content)
    return {
        key: value.string_value or value.number_value
        for key, value in data.session_start_info.hparams.items()
    }


def test_tiny_run_learns_and_writes_a_complete_run_folder(tiny_config, tmp_path: Path) -> None:
    batches = tmp_path / "batches.jsonl"
    cfg = tiny_config(
        "module.lr=3e-3",
        "trainer.max_steps=30",
        "trainer.val_check_interval=10",
        "trainer.limit_val_batches=3",
        "+callbacks.batch_log._target_=tests.helpers.callbacks.BatchLog",
        f"+callbacks.batch_log.path={batches}",
    )
    summary = train(cfg)
    run_dir = Path(cfg.run_dir)

    val = scalars(run_dir, "val/loss")
    # Step 0 is the untrained model; then Lightning logs each validation at the count of batches
    # stepped before the one that triggered it (9, 19, 29).
    assert [step for step, _ in val] == [0, 9, 19, 29]
    assert val[-1][1] < 0.6 * val[0][1]
    train_loss = scalars(run_dir, "train/loss")
    assert [step for step, _ in train_loss] == list(range(30))
    assert [step for step, _ in scalars(run_dir, "val/response_loss")] == [0, 9, 19, 29]

    # Counted from the batches the run trained on, as a callback of the test saw them.
    trained = read_batch_log(batches)
    tokens = sum(record[2] for record in trained)
    target_tokens = sum(record[3] for record in trained)
    assert len(trained) == 30 and target_tokens < tokens
    assert scalars(run_dir, "train/tokens_seen")[-1] == (29, pytest.approx(tokens))

    written = json.loads((run_dir / "summary.json").read_text())
    assert written == summary
    assert (written["status"], written["steps"]) == ("finished", 30)
    assert (written["tokens"], written["target_tokens"]) == (tokens, target_tokens)
    assert written["val_loss"] == pytest.approx(val[-1][1], rel=1e-6)
    assert written["train_loss"] == pytest.approx(train_loss[-1][1], rel=1e-6)
    # Throughput counts training steps only, so it is above tokens over the whole wall time.
    assert written["train_tokens_per_sec"] > tokens / written["wall_time_s"]
    assert written["peak_memory_mb"] > 0

    assert logged_hparams(run_dir) == {
        "model": "gpt2-tiny",
        "prompt": "alpaca",
        "mask_instructions": 0.0,
        "weights": "None",
        "lr": 3e-3,
        "batch_size": 8.0,
        "seed": 123.0,
    }
    assert scalars(run_dir, "hparams/val_loss")[0][1] == pytest.approx(val[-1][1], rel=1e-6)
    assert torch.load(run_dir / "checkpoints" / "last.ckpt")["global_step"] == 30
    assert [p.name for p in (run_dir / "checkpoints").glob("best-step*.ckpt")] == [
        f"best-step{min(val[1:], key=lambda v: v[1])[0] + 1}.ckpt"
    ]
    assert (run_dir / "model.safetensors").is_file() and (run_dir / "config.json").is_file()
