"""Compare the runs of a sweep: a ranked Markdown/CSV table and one plot of every val-loss curve."""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lit_sft.compare.sweep import paired_against_best, paired_section
from lit_sft.curves import Curve, plot_val_loss, read_scalar
from lit_sft.run_dir import RunDir, find_run_dirs, read_json

FINISHED = "finished"
FAILED = "failed"
UNFINISHED = "unfinished"

# (summary key, Markdown header, format spec); score columns go in front of these.
SUMMARY_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("val_loss", "val loss", ".4f"),
    ("val_response_loss", "val response loss", ".4f"),
    ("train_loss", "train loss", ".4f"),
    ("train_tokens_per_sec", "tokens/s", ".0f"),
    ("wall_time_s", "wall time (s)", ".1f"),
    ("peak_memory_mb", "peak memory (MB)", ".0f"),
)
MAX_ERROR_CHARS = 120


@dataclass(frozen=True)
class RunRecord:
    """One run folder of a sweep: its overrides, status and whatever summaries it wrote."""

    path: Path
    overrides: dict[str, str]
    status: str
    summary: dict[str, Any] = field(default_factory=dict)
    eval_summary: dict[str, Any] | None = None
    error: str | None = None

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def metrics(self) -> dict[str, float]:
        """The summary's numbers plus the eval score, keyed by its metric name."""
        values = {k: float(v) for k, v in self.summary.items() if _is_number(v)}
        ev = self.eval_summary or {}
        if ev.get("metric") and _is_number(ev.get("mean")):
            values[ev["metric"]] = float(ev["mean"])
        return values


def _is_number(value: Any) -> bool:
    # bool is an int subclass, but flags like mask_instructions are not metrics.
    return isinstance(value, int | float) and not isinstance(value, bool)


def load_run(run: RunDir) -> RunRecord:
    """Read one run folder; a missing `summary.json` means the run never got to the end."""
    overrides = run.read_overrides()
    try:
        summary = read_json(run.summary)
    except json.JSONDecodeError as err:
        return RunRecord(run.path, overrides, FAILED, error=f"unreadable summary.json: {err}")
    if summary is None:
        return RunRecord(run.path, overrides, UNFINISHED)
    status = summary.get("status", FINISHED)
    eval_summary = run.read_eval_summary()
    return RunRecord(run.path, overrides, status, summary, eval_summary, summary.get("error"))


def collect_runs(sweep_dir: Path) -> list[RunRecord]:
    """Every run of a sweep (or of any folder whose subfolders hold `.hydra/`), in job order."""
    run_dirs = find_run_dirs(Path(sweep_dir))
    if not run_dirs:
        raise ValueError(f"no runs in {sweep_dir}: expected subfolders holding .hydra/")
    return [load_run(d) for d in run_dirs]


def swept_keys(runs: Sequence[RunRecord]) -> list[str]:
    """Override keys whose value differs between runs (missing counts as a value), in order."""
    keys = list(dict.fromkeys(k for run in runs for k in run.overrides))
    return [k for k in keys if len({run.overrides.get(k) for run in runs}) > 1]


def score_names(runs: Sequence[RunRecord]) -> list[str]:
    """Evaluation metrics (`judge`, `exact_match`) that at least one run was scored with."""
    names = (r.eval_summary.get("metric") for r in runs if r.eval_summary)
    return sorted({n for n in names if n})


def metric_names(runs: Sequence[RunRecord]) -> list[str]:
    """Metrics to sort by: scores, the table columns (even where no run has one), other numbers."""
    columns = [key for key, _, _ in SUMMARY_COLUMNS]
    numbers = [k for r in runs if r.status == FINISHED for k in r.metrics]
    return list(dict.fromkeys([*score_names(runs), *columns, *numbers]))


def default_metric(runs: Sequence[RunRecord]) -> str:
    """The evaluation score if any run has one, else `val_loss`."""
    scores = score_names(runs)
    return scores[0] if scores else "val_loss"


def higher_is_better(metric: str, runs: Sequence[RunRecord]) -> bool:
    """Whether bigger is better: true for scores and throughput, not losses, time or memory."""
    return metric in score_names(runs) or metric.endswith("_per_sec")


def check_metric(metric: str, runs: Sequence[RunRecord]) -> None:
    """Raise ValueError naming the valid metrics unless `metric` is one of them."""
    valid = metric_names(runs)
    if metric not in valid:
        raise ValueError(f"unknown metric {metric!r}; valid metrics: {', '.join(valid)}")


def score_question(eval_summary: dict[str, Any]) -> str:
    """What an evaluation score measured, apart from the model: scorer (judge, its prompt),
    test split, decoding and limit. The prompt style belongs to the model side (a sweep may vary
    it)."""
    answers = {
        k: v
        for k, v in (eval_summary.get("answers") or {}).items()
        if k not in ("weights_sha256", "source", "prompt_style")
    }
    question = {k: eval_summary.get(k) for k in ("metric", "scorer", "limit")}
    return json.dumps({**question, "answers": answers}, sort_keys=True)


def check_same_question(metric: str, runs: Sequence[RunRecord]) -> None:
    """Raise ValueError unless every run's `metric` score measured the same thing."""
    scored = [r for r in runs if r.eval_summary and r.eval_summary.get("metric") == metric]
    first = next(iter(scored), None)
    for run in scored:
        if score_question(run.eval_summary) != score_question(first.eval_summary):
            raise ValueError(
                f"the {metric} scores of {first.name} and {run.name} measured different things "
                "(scorer, judge, test split, decoding or limit differ in their eval summaries); "
                "evaluate every run the same way, or pass --metric val_loss"
            )


def rank_runs(runs: Sequence[RunRecord], metric: str, descending: bool) -> list[RunRecord]:
    """Finished runs sorted by `metric` (those without it last), then failed, then unfinished."""
    finished = [r for r in runs if r.status == FINISHED]
    scored = [r for r in finished if metric in r.metrics]
    scored.sort(key=lambda r: r.metrics[metric], reverse=descending)
    unscored = [r for r in finished if metric not in r.metrics]
    rest = [r for r in runs if r.status != FINISHED]
    rest.sort(key=lambda r: r.status == UNFINISHED)
    return scored + unscored + rest


def run_label(run: RunRecord, keys: Sequence[str]) -> str:
    """Name a run by its swept values, e.g. `model=gpt2-tiny,prompt=alpaca`; else by its folder."""
    parts = [f"{k}={run.overrides[k]}" for k in keys if k in run.overrides]
    return ",".join(parts) or run.name


def _ci95_half_width(eval_summary: dict[str, Any]) -> float | None:
    ci = eval_summary.get("ci95")
    if not ci or len(ci) != 2 or not all(_is_number(x) for x in ci):
        return None
    return (ci[1] - ci[0]) / 2


def run_values(run: RunRecord, keys: Sequence[str], scores: Sequence[str]) -> dict[str, Any]:
    """One report row as plain values: folder, swept values, scores, summary numbers, status."""
    row: dict[str, Any] = {"run": run.name}
    row.update({k: run.overrides.get(k) for k in keys})
    ev = run.eval_summary or {}
    for name in scores:
        own = ev.get("metric") == name
        row[name] = run.metrics.get(name) if own else None
        row[f"{name}_ci95"] = _ci95_half_width(ev) if own else None
    row.update({key: run.metrics.get(key) for key, _, _ in SUMMARY_COLUMNS})
    row["status"] = run.status
    row["error"] = run.error
    return row


def _cell(value: Any, spec: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    text = format(value, spec) if _is_number(value) else str(value)
    # A pipe or a newline inside a cell would break the table.
    return " ".join(text.split()).replace("|", "\\|")


def _status_cell(status: str, error: str | None) -> str:
    if not error:
        return _cell(status)
    short = error if len(error) <= MAX_ERROR_CHARS else error[: MAX_ERROR_CHARS - 1] + "…"
    return _cell(f"{status}: {short}")


def _score_cell(score: float | None, half_width: float | None) -> str:
    if score is None or half_width is None:
        return _cell(score, ".1f")
    return f"{score:.1f} ± {half_width:.1f}"


def markdown_table(runs: Sequence[RunRecord], keys: Sequence[str], scores: Sequence[str]) -> str:
    """A Markdown table of already ranked runs; only finished runs get a rank number."""
    id_headers = list(keys) or ["run"]
    headers = ["#", *id_headers, *scores] + [h for _, h, _ in SUMMARY_COLUMNS] + ["status"]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    ranks = iter(range(1, len(runs) + 1))
    for run in runs:
        row = run_values(run, keys, scores)
        cells = [str(next(ranks)) if run.status == FINISHED else ""]
        cells += [_cell(row[k]) for k in id_headers]
        cells += [_score_cell(row[s], row[f"{s}_ci95"]) for s in scores]
        cells += [_cell(row[key], spec) for key, _, spec in SUMMARY_COLUMNS]
        cells.append(_status_cell(run.status, run.error))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_csv(
    runs: Sequence[RunRecord], keys: Sequence[str], scores: Sequence[str], path: Path
) -> Path:
    """Write the ranked runs as CSV with full-precision numbers and the full error text."""
    rows = [run_values(run, keys, scores) for run in runs]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def val_loss_curves(runs: Sequence[RunRecord], keys: Sequence[str]) -> list[Curve]:
    """Val-loss curve of every run that logged one; runs that did not finish say so in the label."""
    curves = []
    for run in runs:
        finished = run.status == FINISHED
        label = run_label(run, keys) + ("" if finished else f" ({run.status})")
        if points := read_scalar(run.path):
            curves.append(Curve(label, points, finished))
    return curves


def _parse_args(argv: Sequence[str] | None) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    parser = argparse.ArgumentParser(prog="python -m lit_sft.report", description=__doc__)
    parser.add_argument(
        "sweep_dir", type=Path, help="multirun folder, or any folder of run folders"
    )
    parser.add_argument("--metric", help="sort by this metric (default: the score, else val_loss)")
    order = parser.add_mutually_exclusive_group()
    order.add_argument(
        "--ascending", dest="descending", action="store_false", default=None, help="smallest first"
    )
    order.add_argument("--descending", dest="descending", action="store_true", help="largest first")
    parser.add_argument("--out", type=Path, help="where to write the report (default: sweep_dir)")
    return parser, parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Write report.md, report.csv and val_loss.png for a sweep and print the table."""
    parser, args = _parse_args(argv)
    try:
        runs = collect_runs(args.sweep_dir)
        metric = args.metric or default_metric(runs)
        check_metric(metric, runs)
        check_same_question(metric, runs)
    except ValueError as err:
        parser.error(str(err))
    descending = higher_is_better(metric, runs) if args.descending is None else args.descending
    keys, scores = swept_keys(runs), score_names(runs)
    ranked = rank_runs(runs, metric, descending)
    out = args.out or args.sweep_dir
    out.mkdir(parents=True, exist_ok=True)
    order = "descending" if descending else "ascending"
    table = f"Sorted by {metric} ({order}).\n\n" + markdown_table(ranked, keys, scores)
    if metric in scores:
        scored = [r.path for r in ranked if r.status == FINISHED and metric in r.metrics]
        table += "\n" + paired_section(paired_against_best(scored))
    (out / "report.md").write_text(table)
    print(table)
    written = [out / "report.md", write_csv(ranked, keys, scores, out / "report.csv")]
    if curves := val_loss_curves(ranked, keys):
        written.append(plot_val_loss(curves, out / "val_loss.png"))
    else:
        print(
            "no val/loss scalars found under any run's tb/; skipped val_loss.png", file=sys.stderr
        )
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
