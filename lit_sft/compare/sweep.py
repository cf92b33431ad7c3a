"""The sweep report's paired comparison: each run's score against the best run's, entry by entry."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lit_sft.compare.loading import models_from_results
from lit_sft.evaluation.paired import paired_stats
from lit_sft.evaluation.results import ScoredResult, read_results
from lit_sft.run_dir import RunDir


def latest_result(run: Path) -> ScoredResult | None:
    """The result the run's newest evaluation summary names (`<answers>/<scorer>`), if any."""
    summary = RunDir(run).read_eval_summary() or {}
    found = [r for r in read_results(RunDir(run).eval) if r.name == summary.get("result")]
    return found[0] if found else None


def paired_against_best(runs: Sequence[Path]) -> list[dict[str, Any]]:
    """Per run after the first (the best), its paired statistics against the best run.

    Runs whose newest result another scorer made, or that answered another test split, get
    their reason instead of figures.
    """
    best = latest_result(runs[0]) if runs else None
    if best is None:
        return []
    rows = []
    for run in runs[1:]:
        result = latest_result(run)
        row: dict[str, Any] = {"run": run.name, "best": runs[0].name}
        if result is None or result.scores_dir.path.name != best.scores_dir.path.name:
            rows.append({**row, "skipped": "not scored by the best run's scorer"})
            continue
        a, b = models_from_results([best, result])
        metric = best.scores_dir.path.name
        try:
            stats = paired_stats(a.scores[metric], b.scores[metric], names=(a.name, b.name))
        except ValueError as error:  # InvalidInput: another test split
            rows.append({**row, "skipped": str(error).split(";")[0]})
            continue
        rows.append({**row, **stats.as_dict()})
    return rows


def paired_section(rows: Sequence[dict[str, Any]]) -> str:
    """The rows as a Markdown section: each run minus the best, with its paired interval."""
    if not rows:
        return ""
    lines = [
        f"Against the best run ({rows[0]['best']}), on the same test entries (paired bootstrap "
        "95 % interval of run − best; an interval holding 0 is no evidence of a difference):",
        "",
        "| run | n | run − best | 95 % interval | wins / ties / losses | p |",
        "|---|---:|---:|---|---|---:|",
    ]
    for row in rows:
        if "skipped" in row:
            lines.append(f"| {row['run']} | — | — | {row['skipped']} | — | — |")
            continue
        low, high = row["ci95"]
        lines.append(
            f"| {row['run']} | {row['n']} | {row['diff']:+.2f} | [{low:+.2f}, {high:+.2f}] | "
            f"{row['wins']} / {row['ties']} / {row['losses']} | {row['p_value']:.3g} |"
        )
    return "\n".join(lines) + "\n"
