"""Sweep report: run collection, ranking, Markdown/CSV tables and the val-loss plot."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from matplotlib.colors import to_rgb
from matplotlib.image import imread
from torch.utils.tensorboard import SummaryWriter

from lit_sft.curves import read_scalar
from lit_sft.report import (
    RunRecord,
    check_metric,
    collect_runs,
    main,
    rank_runs,
    swept_keys,
    val_loss_curves,
)
from lit_sft.run_dir import find_run_dirs

ROOT = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FAILED_ERROR = "CUDA out of memory | tried to allocate 2.00 GiB\nTraceback follows"


def finished_summary(val_loss: float, **extra: Any) -> dict[str, Any]:
    """A summary.json as a finished run writes it."""
    return {
        "status": "finished",
        "model": "gpt2-tiny",
        "prompt": "alpaca",
        "mask_instructions": False,
        "train_loss": round(val_loss - 0.25, 4),
        "val_loss": val_loss,
        "val_response_loss": round(val_loss - 0.1, 4),
        "steps": 50,
        "tokens": 40000,
        "target_tokens": 30000,
        "train_tokens_per_sec": 2500.0 / val_loss,
        "peak_memory_mb": 900.0 * val_loss,
        "wall_time_s": 60.0 + val_loss,
        "truncated_entries": 0,
        "parameters": 7000000,
        **extra,
    }


def eval_summary(metric: str, mean: float) -> dict[str, Any]:
    """An eval/eval-summary.json as the evaluation writes it."""
    return {
        "metric": metric,
        "entries": 110,
        "scored": 108,
        "failures": 2,
        "mean": mean,
        "std": 20.1,
        "ci95": [mean - 3.8, mean + 3.8],
        "val_loss": 0.65,
    }


def val_curve(final: float, steps: int = 50) -> list[tuple[int, float]]:
    """A decreasing val-loss curve that ends at `final`, logged every 10 steps."""
    return [(s, final + (steps - s) / 20) for s in range(10, steps + 1, 10)]


def make_run(
    sweep: Path,
    name: str,
    overrides: list[str],
    summary: dict[str, Any] | None = None,
    evaluation: dict[str, Any] | None = None,
    curve: list[tuple[int, float]] | None = None,
) -> Path:
    """Write one run folder the way train.py and evaluate.py lay it out."""
    run = sweep / name
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"seed": 1, "run": name}))
    (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if summary is not None:
        (run / "summary.json").write_text(json.dumps(summary))
    if evaluation is not None:
        (run / "eval").mkdir()
        (run / "eval" / "eval-summary.json").write_text(json.dumps(evaluation))
    if curve:
        writer = SummaryWriter(log_dir=str(run / "tb" / "version_0"))
        for step, value in curve:
            writer.add_scalar("val/loss", value, step)
            writer.add_scalar("train/loss", value - 0.2, step)
        writer.close()
    return run


# name -> (model, prompt, final val loss); None marks the failed and the unfinished run.
FINISHED_RUNS = {
    "0_model=gpt2-tiny,prompt=alpaca": ("gpt2-tiny", "alpaca", 1.5),
    "1_model=gpt2-tiny,prompt=phi3": ("gpt2-tiny", "phi3", 1.2),
    "2_model=gpt2-small,prompt=alpaca": ("gpt2-small", "alpaca", 1.8),
    "3_model=gpt2-small,prompt=phi3": ("gpt2-small", "phi3", 0.9),
}
UNFINISHED_RUN = "4_model=gpt2-medium,prompt=alpaca"
FAILED_RUN = "5_model=gpt2-medium,prompt=phi3"
BY_VAL_LOSS = [
    ("gpt2-small", "phi3"),
    ("gpt2-tiny", "phi3"),
    ("gpt2-tiny", "alpaca"),
    ("gpt2-small", "alpaca"),
    ("gpt2-medium", "phi3"),  # failed
    ("gpt2-medium", "alpaca"),  # unfinished
]


def make_sweep(root: Path, scores: dict[str, tuple[str, float]] | None = None) -> Path:
    """4 finished runs, 1 killed without a summary and 1 crashed; `scores` adds eval summaries."""
    sweep = root / "multirun" / "2026-11-25" / "12-00-00"
    sweep.mkdir(parents=True)
    (sweep / "multirun.yaml").write_text(yaml.safe_dump({"hydra": {"mode": "MULTIRUN"}}))
    scores = scores or {}
    for name, (model, prompt, val_loss) in FINISHED_RUNS.items():
        overrides = [f"model={model}", f"prompt={prompt}", "trainer.max_steps=50"]
        summary = finished_summary(val_loss, model=model, prompt=prompt)
        evaluation = eval_summary(*scores[name]) if name in scores else None
        make_run(sweep, name, overrides, summary, evaluation, val_curve(val_loss))
    medium = ["model=gpt2-medium", "trainer.max_steps=50"]
    make_run(sweep, UNFINISHED_RUN, [*medium, "prompt=alpaca"], curve=val_curve(2.5, steps=20))
    failed = {"status": "failed", "error": FAILED_ERROR}
    make_run(sweep, FAILED_RUN, [*medium, "prompt=phi3"], failed)
    return sweep


def table_rows(markdown: str) -> tuple[list[str], list[list[str]]]:
    """Header and body cells of the (only) Markdown table in `markdown`."""
    lines = [line for line in markdown.splitlines() if line.startswith("|")]
    cells = [[c.strip() for c in line.strip("|").split(" | ")] for line in lines]
    return cells[0], cells[2:]


def run_report(sweep: Path, *args: str) -> tuple[list[str], list[list[str]]]:
    """Run the CLI entry point and parse the Markdown it wrote."""
    assert main([str(sweep), *args]) == 0
    return table_rows((sweep / "report.md").read_text())


def column(header: list[str], rows: list[list[str]], name: str) -> list[str]:
    return [row[header.index(name)] for row in rows]


def models_and_prompts(header: list[str], rows: list[list[str]]) -> list[tuple[str, str]]:
    models, prompts = column(header, rows, "model"), column(header, rows, "prompt")
    return list(zip(models, prompts, strict=True))


def test_collect_runs_reads_status_of_every_run(tmp_path: Path) -> None:
    runs = collect_runs(make_sweep(tmp_path))
    statuses = {run.name: run.status for run in runs}
    assert statuses == {
        **dict.fromkeys(FINISHED_RUNS, "finished"),
        UNFINISHED_RUN: "unfinished",
        FAILED_RUN: "failed",
    }
    failed = next(run for run in runs if run.name == FAILED_RUN)
    assert failed.error == FAILED_ERROR
    assert runs[3].metrics["val_loss"] == 0.9
    assert runs[3].overrides == {
        "model": "gpt2-small",
        "prompt": "phi3",
        "trainer.max_steps": "50",
    }


def test_swept_keys_are_the_overrides_that_differ() -> None:
    def run(*overrides: str) -> RunRecord:
        return RunRecord(Path("x"), dict(o.split("=") for o in overrides), "finished")

    runs = [
        run("model=gpt2-tiny", "trainer.max_steps=50", "prompt=alpaca"),
        run("model=gpt2-small", "trainer.max_steps=50", "prompt=alpaca"),
        run("model=gpt2-small", "trainer.max_steps=50", "prompt=alpaca", "data.mask=true"),
    ]
    assert swept_keys(runs) == ["model", "data.mask"]
    assert swept_keys(runs[1:2]) == []


def test_run_folders_in_job_order(tmp_path: Path) -> None:
    for name in ["10_b", "9_a", "1_c", "notes"]:
        (tmp_path / name).mkdir()
    for name in ["10_b", "9_a", "1_c"]:
        (tmp_path / name / ".hydra").mkdir()
        (tmp_path / name / ".hydra" / "config.yaml").write_text("seed: 1\n")
    assert [r.path.name for r in find_run_dirs(tmp_path)] == ["1_c", "9_a", "10_b"]


def test_table_ranks_finished_runs_by_val_loss_then_lists_the_rest(tmp_path: Path) -> None:
    sweep = make_sweep(tmp_path)
    header, rows = run_report(sweep)

    assert header[:3] == ["#", "model", "prompt"]
    assert "trainer.max_steps" not in header and "run" not in header
    assert "judge" not in header and "exact_match" not in header
    assert all(len(row) == len(header) for row in rows)
    assert models_and_prompts(header, rows) == BY_VAL_LOSS
    assert column(header, rows, "#") == ["1", "2", "3", "4", "", ""]
    assert column(header, rows, "val loss")[:4] == ["0.9000", "1.2000", "1.5000", "1.8000"]
    status = column(header, rows, "status")
    assert status[:4] == ["finished"] * 4
    assert status[4].startswith("failed: CUDA out of memory \\| tried")
    assert "\n" not in status[4]
    assert status[5] == "unfinished"
    assert column(header, rows, "val loss")[4:] == ["—", "—"]
    assert "Sorted by val_loss (ascending)" in (sweep / "report.md").read_text()


def test_csv_parses_back_with_the_same_values(tmp_path: Path) -> None:
    sweep = make_sweep(tmp_path)
    main([str(sweep)])
    with (sweep / "report.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))

    assert len(rows) == 6
    assert "trainer.max_steps" not in rows[0]
    summaries = {name: finished_summary(v) for name, (_, _, v) in FINISHED_RUNS.items()}
    for row in rows[:4]:
        expected = summaries[row["run"]]
        assert row["status"] == "finished"
        for key in ["val_loss", "val_response_loss", "train_loss", "train_tokens_per_sec"]:
            assert float(row[key]) == expected[key], key
        for key in ["wall_time_s", "peak_memory_mb"]:
            assert float(row[key]) == expected[key], key
    assert [(r["model"], r["prompt"]) for r in rows] == BY_VAL_LOSS
    assert (rows[4]["status"], rows[4]["error"]) == ("failed", FAILED_ERROR)
    assert (rows[5]["status"], rows[5]["error"], rows[5]["val_loss"]) == ("unfinished", "", "")


def test_val_loss_png_draws_every_logged_curve(tmp_path: Path) -> None:
    sweep = make_sweep(tmp_path)
    main([str(sweep)])
    png = sweep / "val_loss.png"
    assert png.read_bytes()[:8] == PNG_MAGIC
    pixels = imread(png)
    assert pixels.shape == (5 * 120, 8 * 120, 4)  # figsize 8 x 5 inches at 120 dpi, RGBA
    # Each of the five curves in its colour of matplotlib's default cycle (C0..C4): axes, ticks
    # and text are grey, so these pixels are the lines, their markers and the legend's samples.
    rgb = pixels[..., :3]
    for colour in ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd"):
        exact = (np.abs(rgb - np.array(to_rgb(colour))) < 1 / 255).all(axis=-1)
        assert exact.sum() > 100, colour

    runs = rank_runs(collect_runs(sweep), "val_loss", descending=False)
    curves = val_loss_curves(runs, swept_keys(runs))
    assert [c.label for c in curves] == [
        "model=gpt2-small,prompt=phi3",
        "model=gpt2-tiny,prompt=phi3",
        "model=gpt2-tiny,prompt=alpaca",
        "model=gpt2-small,prompt=alpaca",
        "model=gpt2-medium,prompt=alpaca (unfinished)",
    ]
    assert [c.finished for c in curves] == [True] * 4 + [False]
    steps, values = zip(*curves[0].points, strict=True)
    assert steps == (10, 20, 30, 40, 50)
    assert values == pytest.approx([v for _, v in val_curve(0.9)])


def test_read_scalar_merges_resumed_event_files(tmp_path: Path) -> None:
    run = make_run(tmp_path, "run", [], curve=[(10, 3.0), (20, 2.0)])
    writer = SummaryWriter(log_dir=str(run / "tb" / "version_1"))
    writer.add_scalar("val/loss", 1.5, 20)
    writer.add_scalar("val/loss", 1.0, 30)
    writer.close()
    assert read_scalar(run) == [(10, 3.0), (20, 1.5), (30, 1.0)]
    steps, values = zip(*read_scalar(run, "train/loss"), strict=True)
    assert (steps, values) == ((10, 20), pytest.approx((2.8, 1.8)))


def test_default_sort_is_the_judge_score_descending(tmp_path: Path) -> None:
    scores = {
        "0_model=gpt2-tiny,prompt=alpaca": ("judge", 70.0),
        "1_model=gpt2-tiny,prompt=phi3": ("judge", 40.0),
        "2_model=gpt2-small,prompt=alpaca": ("judge", 55.0),
    }
    sweep = make_sweep(tmp_path, scores)
    header, rows = run_report(sweep)

    assert header.index("judge") == 3
    assert models_and_prompts(header, rows) == [
        ("gpt2-tiny", "alpaca"),
        ("gpt2-small", "alpaca"),
        ("gpt2-tiny", "phi3"),
        ("gpt2-small", "phi3"),  # finished but never evaluated
        ("gpt2-medium", "phi3"),
        ("gpt2-medium", "alpaca"),
    ]
    assert column(header, rows, "judge")[:4] == ["70.0 ± 3.8", "55.0 ± 3.8", "40.0 ± 3.8", "—"]
    assert column(header, rows, "#")[:4] == ["1", "2", "3", "4"]
    with (sweep / "report.csv").open(newline="") as f:
        first = next(csv.DictReader(f))
    assert (float(first["judge"]), float(first["judge_ci95"])) == pytest.approx((70.0, 3.8))


def test_exact_match_score_and_explicit_order(tmp_path: Path) -> None:
    scores = {name: ("exact_match", 10.0 * i) for i, name in enumerate(FINISHED_RUNS)}
    sweep = make_sweep(tmp_path, scores)

    header, rows = run_report(sweep)
    assert column(header, rows, "exact_match")[:4] == [
        "30.0 ± 3.8",
        "20.0 ± 3.8",
        "10.0 ± 3.8",
        "0.0 ± 3.8",
    ]

    header, rows = run_report(sweep, "--metric", "exact_match", "--ascending")
    assert column(header, rows, "exact_match")[:4] == [
        "0.0 ± 3.8",
        "10.0 ± 3.8",
        "20.0 ± 3.8",
        "30.0 ± 3.8",
    ]

    header, rows = run_report(sweep, "--metric", "val_loss", "--descending")
    assert column(header, rows, "val loss")[:4] == ["1.8000", "1.5000", "1.2000", "0.9000"]
    assert [s.split(":")[0] for s in column(header, rows, "status")[4:]] == ["failed", "unfinished"]

    header, rows = run_report(sweep, "--metric", "train_tokens_per_sec")
    assert column(header, rows, "tokens/s")[:4] == ["2778", "2083", "1667", "1389"]


def test_unknown_metric_lists_the_valid_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sweep = make_sweep(tmp_path, {"0_model=gpt2-tiny,prompt=alpaca": ("judge", 70.0)})
    with pytest.raises(SystemExit) as exit_info:
        main([str(sweep), "--metric", "bleu"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "unknown metric 'bleu'" in err
    valid = err.split("valid metrics:")[1]
    for name in ["judge", "val_loss", "val_response_loss", "train_loss", "train_tokens_per_sec"]:
        assert name in valid
    assert "mask_instructions" not in valid
    assert not (sweep / "report.md").exists()

    with pytest.raises(ValueError) as error:
        check_metric("bleu", collect_runs(sweep))
    assert str(error.value).endswith(
        "valid metrics: judge, val_loss, val_response_loss, train_loss, train_tokens_per_sec, "
        "wall_time_s, peak_memory_mb, steps, tokens, target_tokens, truncated_entries, parameters"
    )


def test_a_sweep_without_val_loss_still_reports(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Runs that never validated: the report ranks by what exists and shows the rest as —."""
    sweep = tmp_path / "multirun"
    no_val = {k: v for k, v in finished_summary(1.0).items() if not k.startswith("val_")}
    make_run(sweep, "0_lr=1", ["module.lr=1"], no_val)
    failed = {"status": "failed", "steps": 0, "error": "entry 1 has no 'output' field"}
    make_run(sweep, "1_lr=2", ["module.lr=2"], failed)
    assert main([str(sweep)]) == 0
    table = (sweep / "report.md").read_text().splitlines()
    assert table[0] == "Sorted by val_loss (ascending)."
    assert table[4] == "| 1 | 1 | — | — | 0.7500 | 2500 | 61.0 | 900 | finished |"
    assert table[5] == "|  | 2 | — | — | — | — | — | — | failed: entry 1 has no 'output' field |"
    assert main([str(sweep), "--metric", "val_response_loss"]) == 0
    capsys.readouterr()


@pytest.mark.parametrize("layout", ["empty", "missing", "no_hydra"])
def test_folder_without_runs_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], layout: str
) -> None:
    sweep = tmp_path / "multirun"
    if layout != "missing":
        sweep.mkdir()
    if layout == "no_hydra":
        (sweep / "0").mkdir()
        (sweep / "0" / "summary.json").write_text(json.dumps(finished_summary(1.0)))
    with pytest.raises(SystemExit) as exit_info:
        main([str(sweep)])
    assert exit_info.value.code == 2
    assert f"no runs in {sweep}" in capsys.readouterr().err
    with pytest.raises(ValueError, match="no runs"):
        collect_runs(sweep)


def test_plain_outputs_folder_and_out_dir(tmp_path: Path) -> None:
    day = tmp_path / "outputs" / "2026-11-25"
    make_run(day, "12-00-00", ["model=gpt2-tiny"], finished_summary(1.4), curve=val_curve(1.4))
    make_run(day, "13-00-00", ["model=gpt2-tiny"], finished_summary(1.1), curve=val_curve(1.1))
    out = tmp_path / "report"
    assert main([str(day), "--out", str(out)]) == 0

    assert not (day / "report.md").exists()
    header, rows = table_rows((out / "report.md").read_text())
    # Nothing differs between the runs, so they are told apart by folder name.
    assert header[:2] == ["#", "run"]
    assert column(header, rows, "run") == ["13-00-00", "12-00-00"]
    assert (out / "report.csv").is_file()
    assert (out / "val_loss.png").read_bytes()[:8] == PNG_MAGIC


def test_a_single_run_folder_is_a_one_row_report(tmp_path: Path) -> None:
    run = make_run(tmp_path, "12-00-00", ["model=gpt2-tiny"], finished_summary(1.4))
    header, rows = run_report(run)
    assert column(header, rows, "run") == ["12-00-00"]
    assert column(header, rows, "val loss") == ["1.4000"]


def test_module_runs_from_the_command_line(tmp_path: Path) -> None:
    sweep = make_sweep(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "lit_sft.report", str(sweep), "--metric", "val_response_loss"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "Sorted by val_response_loss (ascending)" in result.stdout
    assert "| 1 | gpt2-small | phi3 |" in result.stdout
    assert str(sweep / "val_loss.png") in result.stdout


def test_scores_that_measured_different_things_are_not_ranked_together(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = ["0_model=gpt2-tiny,prompt=alpaca", "1_model=gpt2-tiny,prompt=phi3"]
    sweep = make_sweep(tmp_path, {runs[0]: ("judge", 70.0), runs[1]: ("judge", 40.0)})

    def judged_by(run: str, judge_model: str, prompt_style: str, **changes: Any) -> None:
        path = sweep / run / "eval" / "eval-summary.json"
        summary = json.loads(path.read_text())
        summary["scorer"] = {"scorer": "judge", "model": judge_model, "prompt": "rubric"}
        summary["answers"] = {
            "source": run,
            "weights_sha256": run,
            "prompt_style": prompt_style,
            "test_split_sha256": "abc",
            "generation": {"max_new_tokens": 256, "temperature": 0.0},
        }
        summary["limit"] = 100
        for key, value in changes.items():
            (summary["answers"] if key in summary["answers"] else summary)[key] = value
        path.write_text(json.dumps(summary))

    # The same judge on answers of other weights in two prompt styles (what a sweep varies): ranked.
    judged_by(runs[0], "llama3", "alpaca")
    judged_by(runs[1], "llama3", "phi3")
    assert column(*run_report(sweep), "judge")[:2] == ["70.0 ± 3.8", "40.0 ± 3.8"]
    # Another judge, test split, decoding or limit is another question: one line, no report.
    others = {
        "judge": ("gpt-4o", {}),
        "test split": ("llama3", {"test_split_sha256": "def"}),
        "decoding": ("llama3", {"generation": {"max_new_tokens": 64, "temperature": 0.0}}),
        "limit": ("llama3", {"limit": 300}),
    }
    for judge_model, changes in others.values():
        judged_by(runs[1], judge_model, "phi3", **changes)
        (sweep / "report.md").unlink(missing_ok=True)
        with pytest.raises(SystemExit) as exit_info:
            main([str(sweep), "--metric", "judge"])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert (
            f"the judge scores of {runs[0]} and {runs[1]} measured different things (scorer, "
            "judge, test split, decoding or limit differ in their eval summaries); evaluate every "
            "run the same way, or pass --metric val_loss"
        ) in err
        assert not (sweep / "report.md").exists()
    assert main([str(sweep), "--metric", "val_loss"]) == 0
