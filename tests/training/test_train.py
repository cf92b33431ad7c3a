from __future__ import annotations

import json
from itertools import islice
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from lit_sft.checkpoints import load_weights
from lit_sft.cli.train import train
from lit_sft.export.chat_template import chat_template
from lit_sft.model import GPT, GPTConfig
from lit_sft.prompts import prompt_style
from tests.helpers.callbacks import read_batch_log
from tests.helpers.config import scalars


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
        "callbacks=best",
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
        "adapter": "none",
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
    served = ("generation_config.json", "vocab.json", "merges.txt", "tokenizer_config.json")
    assert all((run_dir / name).is_file() for name in served)  # tests/test_export.py: contents
    # The run's own prompt style travels as the chat template (tests/test_export_chat_template.py).
    tokenizer_config = json.loads((run_dir / "tokenizer_config.json").read_text())
    assert tokenizer_config["chat_template"] == chat_template(prompt_style("alpaca"))
    # The data check's pairs beside its counts (tests/data/test_check.py: what it finds).
    pairs = json.loads((run_dir / "data-check-pairs.json").read_text())
    assert isinstance(pairs, list) and "data_check" in json.loads(
        (run_dir / "summary.json").read_text()
    )


def test_a_run_ending_between_validations_validates_its_final_weights(tiny_config) -> None:
    """max_steps=3, validation every 2 steps: the summary's losses are those of step 3's weights."""
    cfg = tiny_config("trainer.max_steps=3", "trainer.val_check_interval=2")
    summary = train(cfg)
    run_dir = Path(cfg.run_dir)

    # Independently: the exported final weights on the first limit_val_batches=2 validation
    # batches, cross-entropy summed over every target token (and over the response's alone).
    model = GPT(GPTConfig(**OmegaConf.to_container(cfg.model.arch, resolve=True))).eval()
    load_weights(model, run_dir / "model.safetensors")
    datamodule = instantiate(cfg.data)
    datamodule.setup("validate")
    sums = torch.zeros(4, dtype=torch.float64)
    with torch.no_grad():
        for batch in islice(datamodule.val_dataloader(), 2):
            targets = batch["targets"]
            logits = model(batch["input_ids"])
            losses = F.cross_entropy(
                logits.flatten(0, 1), targets.flatten(), reduction="none", ignore_index=-100
            ).view_as(targets)
            keep = targets != -100
            positions = torch.arange(targets.shape[1])
            response = keep & (positions >= batch["response_start"].unsqueeze(1))
            sums += torch.stack(
                [losses[keep].sum(), keep.sum(), losses[response].sum(), response.sum()]
            ).double()
    assert summary["steps"] == 3
    assert summary["val_loss"] == pytest.approx(float(sums[0] / sums[1]), rel=1e-5)
    assert summary["val_response_loss"] == pytest.approx(float(sums[2] / sums[3]), rel=1e-5)
    assert json.loads((run_dir / "summary.json").read_text())["val_loss"] == summary["val_loss"]
    val = scalars(run_dir, "val/loss")
    assert [step for step, _ in val] == [0, 1, 3]
    assert val[1][1] != pytest.approx(summary["val_loss"], rel=1e-5)  # step 2's is not the last


def test_training_flushes_denormal_floats_to_zero(tiny_config) -> None:
    try:
        train(tiny_config())
        # 2e-39 is below float32's smallest normal number (1.18e-38): flushed, it reads as zero.
        assert (torch.tensor([1e-39]) * 2).item() == 0.0
    finally:
        torch.set_flush_denormal(False)
