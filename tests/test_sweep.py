from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

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
    assert (sweep_dir / "val_loss.png").stat().st_size > 1000


@pytest.mark.slow
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
