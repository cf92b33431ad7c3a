"""Scoring answers (exact match or a judge LLM), and the summary of the scores."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lit_sft.evaluation.judge import Judge, score_entries
from lit_sft.prompts import prompt_style

SCORERS = ("judge", "exact_match")
CI95_METHOD = "mean ± 1.96·std/√n (normal approximation), clipped to [0, 100]"


def exact_match_scores(entries: Sequence[dict[str, Any]]) -> list[float]:
    """100 for each answer equal to its reference once both are stripped, else 0."""
    return [100.0 if e["model_response"].strip() == e["output"].strip() else 0.0 for e in entries]


def judge_scores(
    entries: Sequence[dict[str, Any]], judge: Judge, path: Path, *, progress: bool = True
) -> list[float | None]:
    """The judge's score of each answer (None where it failed), appended to `path` as it comes."""
    # The judge reads every answer's instruction in one format, so the prompt style a run was
    # trained with changes its answers, not what the judge is asked.
    alpaca = prompt_style("alpaca")
    judged = [{**e, "instruction_text": alpaca.instruction_text(e)} for e in entries]
    results = score_entries(judged, judge, path, progress=progress)
    return [results[i].score for i in range(len(entries))]


def summarize(
    metric: str, scores: Sequence[float | None], val_loss: float | None
) -> dict[str, Any]:
    """Counts, mean, sample std and 95 % interval (see CI95_METHOD) of the scores that exist."""
    scored = [s for s in scores if s is not None]
    mean = statistics.fmean(scored) if scored else None
    std = statistics.stdev(scored) if len(scored) > 1 else None
    ci95 = None
    if mean is not None and std is not None:
        half = 1.96 * std / math.sqrt(len(scored))
        # Scores live in [0, 100]; the normal approximation can reach past either end.
        ci95 = [max(0.0, mean - half), min(100.0, mean + half)]
    return {
        "metric": metric,
        "entries": len(scores),
        "scored": len(scored),
        "failures": len(scores) - len(scored),
        "mean": mean,
        "std": std,
        "ci95": ci95,
        "ci95_method": CI95_METHOD,
        "val_loss": val_loss,
    }


def format_summary(summary: dict[str, Any]) -> str:
    """The summary as a short two-column table."""

    def number(value: float | None, spec: str = ".2f") -> str:
        return "-" if value is None else format(value, spec)

    ci = summary["ci95"]
    rows = [
        ("metric", summary["metric"]),
        ("entries", str(summary["entries"])),
        ("scored", str(summary["scored"])),
        ("failures", str(summary["failures"])),
        ("mean", number(summary["mean"])),
        ("std", number(summary["std"])),
        ("ci95", f"[{ci[0]:.2f}, {ci[1]:.2f}]  ({summary['ci95_method']})" if ci else "-"),
        ("val_loss", number(summary["val_loss"], ".4f")),
    ]
    return "\n".join(f"{name:<10}{value}" for name, value in rows)


def summary_scalars(summary: dict[str, Any]) -> dict[str, float]:
    """`eval/<metric>`, its interval and the counts, as the loggers get them (None left out)."""
    metric = summary["metric"]
    scalars = {
        f"eval/{metric}": summary["mean"],
        f"eval/{metric}_ci95_low": summary["ci95"][0] if summary["ci95"] else None,
        f"eval/{metric}_ci95_high": summary["ci95"][1] if summary["ci95"] else None,
        "eval/scored": summary["scored"],
        "eval/failures": summary["failures"],
    }
    return {tag: float(value) for tag, value in scalars.items() if value is not None}
