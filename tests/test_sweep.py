from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from matplotlib.colors import to_rgb
from matplotlib.image import imread

from lit_sft.report import collect_runs, main, swept_keys
from tests.helpers.config import REPO, TINY_RUN


@pytest.mark.slow
def test_offline_sweep_preset_gives_four_runs_and_a_four_row_report(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    command = [
        sys.executable,
        "train.py",
        "-m",
        "experiment=sweep_demo",
        *TINY_RUN,
        "trainer.max_steps=3",
        "trainer.val_check_interval=3",
        f"hydra.sweep.dir={sweep_dir}",
        "hydra.sweep.subdir=${hydra.job.num}",
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]

    summaries = sorted(sweep_dir.glob("*/summary.json"))
    assert len(summaries) == 4
    assert {
        (s["prompt"], s["mask_instructions"])
        for s in map(lambda p: json.loads(p.read_text()), summaries)
    } == {
        ("alpaca", False),
        ("alpaca", True),
        ("phi3", False),
        ("phi3", True),
    }
    runs = collect_runs(sweep_dir)
    assert sorted(swept_keys(runs)) == ["data.mask_instructions", "prompt"]

    assert main([str(sweep_dir)]) == 0
    with open(sweep_dir / "report.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 4 and all(row["status"] == "finished" for row in rows)
    table = [
        line for line in (sweep_dir / "report.md").read_text().splitlines() if line.startswith("|")
    ]
    assert len(table) == 2 + 4  # header, separator, one row per run
    # One curve per run, each in its colour of matplotlib's default cycle (tests/test_report.py).
    rgb = imread(sweep_dir / "val_loss.png")[..., :3]
    assert rgb.shape == (600, 960, 3)
    for colour in ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728"):
        assert ((np.abs(rgb - np.array(to_rgb(colour))) < 1 / 255).all(axis=-1)).sum() > 100


@pytest.mark.slow
def test_a_failed_job_is_reported_and_the_sweep_goes_on(tmp_path: Path) -> None:
    """Job 0's data is too small for one batch: it fails with one line, job 1 still trains."""
    sweep_dir = tmp_path / "sweep"
    command = [
        sys.executable, "train.py", "-m", *TINY_RUN, "data.synthetic_size=6,200",
        f"hydra.sweep.dir={sweep_dir}", "hydra.sweep.subdir=${hydra.job.num}",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "LIT_SFT_DEBUG": "", "HYDRA_FULL_ERROR": ""}
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    message = (
        "the train split (train 5, val 1, test 0 entries) is smaller than one batch of "
        "data.batch_size=8 per process, so no step would be trained, in the synthetic set; "
        "pass data.batch_size=5 or less, or use more data"
    )
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {message} (job 0, {sweep_dir / '0'})"]
    assert "Traceback" not in result.stderr and "💡" not in result.stdout + result.stderr

    failed = json.loads((sweep_dir / "0" / "summary.json").read_text())
    assert (failed["status"], failed["steps"], failed["error"]) == ("failed", 0, message)
    finished = json.loads((sweep_dir / "1" / "summary.json").read_text())
    assert (finished["status"], finished["steps"]) == ("finished", 4)

    # The console: one header and one closing line for the job that ran.
    parameters = f"{finished['parameters'] / 1e6:.1f}M"
    header = (
        f"training gpt2-tiny ({parameters} parameters) from random init; prompt alpaca, loss on "
        f"all tokens; entries: train 170, val 10, test 20; run folder {sweep_dir / '1'}"
    )
    closing = (
        f"finished 4 steps in {finished['wall_time_s']:.1f} s; final loss train "
        f"{finished['train_loss']:.4f}, val {finished['val_loss']:.4f}, val response "
        f"{finished['val_response_loss']:.4f}; summary.json, weights and logs in {sweep_dir / '1'}"
    )
    lines = [line.split(" - ", 1)[-1] for line in result.stdout.splitlines()]
    assert lines.count(header) == 1 and lines.count(closing) == 1, result.stdout

    assert main([str(sweep_dir)]) == 0
    with open(sweep_dir / "report.csv", newline="") as handle:
        rows = {row["run"]: row for row in csv.DictReader(handle)}
    assert (rows["0"]["status"], rows["0"]["error"]) == ("failed", message)
    assert rows["1"]["status"] == "finished"


def test_a_lora_rank_by_data_size_sweep_reports_both_as_columns(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    command = [
        sys.executable,
        "train.py",
        "-m",
        *TINY_RUN,
        "adapter=lora",
        "adapter.rank=2,4",
        "data.max_train_entries=40,80",
        "trainer.max_steps=2",
        "trainer.val_check_interval=2",
        f"hydra.sweep.dir={sweep_dir}",
        "hydra.sweep.subdir=${hydra.job.num}",
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = collect_runs(sweep_dir)
    assert swept_keys(runs) == ["adapter.rank", "data.max_train_entries"]
    # emb 32, 2 layers: rank x (in + out) over qkv, attention and MLP projections.
    per_rank = 2 * ((32 + 96) + (32 + 32) + (32 + 128) + (128 + 32))
    trainable = {(r.overrides["adapter.rank"], r.summary["trainable_parameters"]) for r in runs}
    assert trainable == {("2", 2 * per_rank), ("4", 4 * per_rank)}
    assert main([str(sweep_dir)]) == 0
    header = (sweep_dir / "report.md").read_text().splitlines()[2]
    assert header.startswith("| # | adapter.rank | data.max_train_entries | val loss |")
    with open(sweep_dir / "report.csv", newline="") as handle:
        sizes = sorted(row["data.max_train_entries"] for row in csv.DictReader(handle))
    assert sizes == ["40", "40", "80", "80"]
