"""Any Lightning logger: hyperparameters, sample answers and evaluate's scores reach each one."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from evaluate import evaluate
from lit_sft.run_dir import RunDir
from tests.evaluation.test_evaluation import QUICK, eval_config
from tests.helpers.config import scalars
from train import train


def train_run(tiny_config, *overrides: str) -> tuple[RunDir, dict]:
    """A tiny run with `overrides`, its composed config saved where Hydra saves it."""
    cfg = tiny_config(*overrides)
    summary = train(cfg)
    run = RunDir(cfg.run_dir)
    run.config.parent.mkdir(exist_ok=True)
    OmegaConf.save(cfg, run.config)
    return run, summary


def evaluate_run(run: RunDir) -> dict:
    return evaluate(eval_config(f"run_dir={run.path}", "scorer=exact_match", "limit=4", *QUICK))


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def column(rows: list[dict[str, str]], key: str) -> list[tuple[int, float]]:
    return [(int(r["step"]), float(r[key])) for r in rows if r.get(key)]


def assert_same_curve(got: list[tuple[int, float]], expected: list[tuple[int, float]]) -> None:
    assert [step for step, _ in got] == [step for step, _ in expected]
    assert [v for _, v in got] == pytest.approx([v for _, v in expected], rel=1e-6)


def test_tensorboard_and_csv_at_once_get_the_same_values(tiny_config) -> None:
    run, summary = train_run(tiny_config, "logger=[tensorboard,csv]")
    rows = read_csv(run.path / "csv" / "metrics.csv")
    assert_same_curve(column(rows, "val/loss"), scalars(run.path, "val/loss"))
    assert_same_curve(column(rows, "train/loss"), scalars(run.path, "train/loss"))
    assert len(column(rows, "train/loss")) == 4
    assert column(rows, "hparams/val_loss") == [(4, pytest.approx(summary["val_loss"]))]
    hparams = yaml.safe_load((run.path / "csv" / "hparams.yaml").read_text())
    assert (hparams["model"], hparams["prompt"], hparams["lr"]) == ("gpt2-tiny", "alpaca", 5e-5)

    # Sample answers: always in samples.jsonl, and as text where the logger has text (TensorBoard).
    samples = [json.loads(line) for line in run.samples.read_text().splitlines()]
    assert [s["step"] for s in samples] == [0, 2, 4]
    events = EventAccumulator(str(run.tb), size_guidance={"tensors": 0})
    events.Reload()
    texts = [e for e in events.Tensors("val/sample_answer/text_summary")]
    assert [e.step for e in texts] == [0, 2, 4]
    assert samples[-1]["answer"] in texts[-1].tensor_proto.string_val[0].decode()

    result = evaluate_run(run)
    # Scores at the run's last step: TensorBoard in tb/, CSV beside the run's own metrics.
    assert scalars(run.path, "eval/exact_match") == [(4, pytest.approx(result["mean"]))]
    eval_rows = read_csv(run.path / "csv" / "eval" / "metrics.csv")
    assert column(eval_rows, "eval/exact_match") == [(4, pytest.approx(result["mean"]))]
    assert column(eval_rows, "eval/scored") == [(4, 4.0)]
    assert read_csv(run.path / "csv" / "metrics.csv") == rows  # the training metrics are intact
