"""Any Lightning logger: hyperparameters, sample answers and evaluate's scores reach each one."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import pytest
import tiktoken
import torch
import yaml
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from transformers import GPT2LMHeadModel

from lit_sft.cli.evaluate import evaluate
from lit_sft.cli.train import train
from lit_sft.data.entries import split_entries
from lit_sft.data.synthetic import synthetic_entries
from lit_sft.prompts import prompt_style
from lit_sft.run_dir import RunDir
from tests.evaluation.test_evaluation import QUICK, eval_config
from tests.helpers.config import scalars


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
    run, summary = train_run(
        tiny_config, "logger=[tensorboard,csv]", "callbacks.sample_answer.every_n_validations=2"
    )
    rows = read_csv(run.path / "csv" / "metrics.csv")
    assert_same_curve(column(rows, "val/loss"), scalars(run.path, "val/loss"))
    assert_same_curve(column(rows, "train/loss"), scalars(run.path, "train/loss"))
    assert len(column(rows, "train/loss")) == 4
    assert column(rows, "hparams/val_loss") == [(4, pytest.approx(summary["val_loss"]))]
    hparams = yaml.safe_load((run.path / "csv" / "hparams.yaml").read_text())
    assert (hparams["model"], hparams["prompt"], hparams["lr"]) == ("gpt2-tiny", "alpaca", 5e-5)

    # Sample answers, of every second validation (steps 0, 2, 4): always in samples.jsonl, and as
    # text where the logger has text (TensorBoard).
    samples = [json.loads(line) for line in run.samples.read_text().splitlines()]
    assert [s["step"] for s in samples] == [0, 4]
    events = EventAccumulator(str(run.tb), size_guidance={"tensors": 0})
    events.Reload()
    texts = [e for e in events.Tensors("val/sample_answer/text_summary")]
    assert [e.step for e in texts] == [0, 4]
    # Independently: the first validation entry, and transformers' greedy 4 tokens (no stop at
    # <|endoftext|>) from the final weights, which step 4's validation answered with.
    entry = split_entries(synthetic_entries(200, seed=123))[2][0]
    prompt = prompt_style("alpaca").prompt(entry)
    tokenizer = tiktoken.get_encoding("gpt2")
    hf_model = GPT2LMHeadModel.from_pretrained(run.path).eval()
    ids = torch.tensor([tokenizer.encode(prompt)])
    with torch.no_grad():
        for _ in range(4):
            ids = torch.cat([ids, hf_model(ids).logits[:, -1:].argmax(-1)], dim=1)
    answer = tokenizer.decode(ids[0, -4:].tolist())
    assert samples[-1] == {
        "step": 4,
        "prompt": prompt,
        "answer": answer,
        "reference": entry["output"],
    }
    assert texts[-1].tensor_proto.string_val[0].decode() == (
        f"**Prompt:** {prompt}\n\n**Answer:** {answer}\n\n**Reference:** {entry['output']}"
    )

    result = evaluate_run(run)
    # Scores at the run's last step: TensorBoard in tb/, CSV beside the run's own metrics.
    tag = f"eval/{result['result']}"  # eval/<answers>/<scorer>: each result under its own name
    assert scalars(run.path, f"{tag}/mean") == [(4, pytest.approx(result["mean"]))]
    eval_rows = read_csv(run.path / "csv" / "eval" / "metrics.csv")
    assert column(eval_rows, f"{tag}/mean") == [(4, pytest.approx(result["mean"]))]
    assert column(eval_rows, f"{tag}/scored") == [(4, 4.0)]
    assert read_csv(run.path / "csv" / "metrics.csv") == rows  # the training metrics are intact


def test_mlflow_gets_hparams_metrics_sample_answers_and_scores_in_one_run(
    tiny_config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("mlflow")
    # MLflow 3 keeps its local file store only on request; it needs no database package.
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    from mlflow.tracking import MlflowClient

    uri = (tmp_path / "mlruns").as_uri()
    run, summary = train_run(tiny_config, "logger=mlflow", f"logger.mlflow.tracking_uri={uri}")
    run_id = json.loads(run.loggers.read_text())["mlflow"]["run_id"]
    client = MlflowClient(uri)
    history = [(m.step, m.value) for m in client.get_metric_history(run_id, "val/loss")]
    assert_same_curve(history, scalars_of_summary_steps(summary, history))
    params = client.get_run(run_id).data.params
    assert (params["model"], params["prompt"], params["lr"]) == ("gpt2-tiny", "alpaca", "5e-05")
    artifacts = Path(client.get_run(run_id).info.artifact_uri.removeprefix("file://"))
    samples = [json.loads(line) for line in run.samples.read_text().splitlines()]
    text = (artifacts / "val" / "sample_answer" / "step-000004.md").read_text()
    assert samples[-1]["answer"] in text

    result = evaluate_run(run)
    scores = client.get_metric_history(run_id, f"eval/{result['result']}/mean")
    assert [(m.step, m.value) for m in scores] == [(4, pytest.approx(result["mean"]))]


def scalars_of_summary_steps(summary: dict, history: list) -> list[tuple[int, float]]:
    """What MLflow must hold: three validations, the last one the summary's val_loss."""
    assert len(history) == 3
    return [*history[:2], (history[2][0], summary["val_loss"])]


def wandb_records(path: Path, expected: bytes, timeout_s: float = 30.0) -> bytes:
    """The bytes of an offline .wandb file once `expected` is in them (or after `timeout_s`).

    wandb's core process writes the file after `finish()` returns; on a busy machine that can
    take seconds.
    """
    deadline = time.monotonic() + timeout_s
    while expected not in (records := path.read_bytes()) and time.monotonic() < deadline:
        time.sleep(0.2)
    return records


def test_wandb_offline_gets_sample_answers_and_evaluate_resumes_the_same_run(
    tiny_config, monkeypatch: pytest.MonkeyPatch
) -> None:
    """wandb 0.31 reads its offline .wandb files only in its Go core, so the metrics are checked
    in the raw records (the protobuf keeps keys and JSON values as plain bytes)."""
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run, summary = train_run(tiny_config, "logger=wandb")
    run_id = json.loads(run.loggers.read_text())["wandb"]["id"]
    (trained,) = run.path.glob(f"wandb/offline-run-*-{run_id}")
    records = wandb_records(trained / f"run-{run_id}.wandb", b"hparams/val_loss")
    assert b"hparams/val_loss" in records and json.dumps(summary["val_loss"]).encode() in records
    samples = [json.loads(line) for line in run.samples.read_text().splitlines()]
    tables = [json.loads(p.read_text()) for p in trained.glob("files/media/table/val/*.json")]
    assert sorted(t["data"][0][0] for t in tables) == [s["step"] for s in samples] == [0, 2, 4]
    answers = {t["data"][0][0]: t["data"][0][1] for t in tables}
    assert all(s["answer"] in answers[s["step"]] for s in samples)

    result = evaluate_run(run)
    evaluated = set(run.path.glob(f"wandb/offline-run-*-{run_id}")) - {trained}
    (evaluated,) = evaluated  # a second offline run directory with the same id: resumed
    tag = f"eval/{result['result']}/mean".encode()
    records = wandb_records(evaluated / f"run-{run_id}.wandb", tag)
    assert tag in records and json.dumps(result["mean"]).encode() in records
