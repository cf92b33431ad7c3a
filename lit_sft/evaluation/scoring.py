"""Scoring answers: exact match, or a judge LLM (once or `repeats` times over)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lit_sft.evaluation.judge import Judge, score_repeats
from lit_sft.prompts import prompt_style

SCORERS = ("judge", "exact_match")

Scores = list[float | None]  # one per entry; None where the scorer failed


def exact_match_scores(entries: Sequence[dict[str, Any]]) -> list[float]:
    """100 for each answer equal to its reference once both are stripped, else 0."""
    return [100.0 if e["model_response"].strip() == e["output"].strip() else 0.0 for e in entries]


def judge_repeats(
    entries: Sequence[dict[str, Any]], judge: Judge, path: Path, *, progress: bool = True
) -> list[Scores]:
    """The judge's scores of each answer, per repeat (`judge.settings.repeats`), kept in `path`."""
    # The judge reads every answer's instruction in one format, so the prompt style a run was
    # trained with changes its answers, not what the judge is asked.
    alpaca = prompt_style("alpaca")
    judged = [{**e, "instruction_text": alpaca.instruction_text(e)} for e in entries]
    repeats = score_repeats(judged, judge, path, repeats=judge.settings.repeats, progress=progress)
    return [[results[i].score for i in range(len(entries))] for results in repeats]


def judge_scores(
    entries: Sequence[dict[str, Any]], judge: Judge, path: Path, *, progress: bool = True
) -> Scores:
    """Each answer's score: the mean of its repeats, None unless every repeat scored it."""
    return mean_of_repeats(judge_repeats(entries, judge, path, progress=progress))


def mean_of_repeats(per_repeat: Sequence[Scores]) -> Scores:
    """Each entry's mean over the repeats; None where any repeat failed."""
    return [
        None if None in scores else statistics.fmean(scores)  # type: ignore[arg-type]
        for scores in zip(*per_repeat, strict=True)
    ]


def self_consistency(per_repeat: Sequence[Scores]) -> dict[str, Any] | None:
    """How far a judge's repeated scorings of the same answers spread; None for one repeat.

    Over the entries every repeat scored: each repeat's mean and their range, and per entry the
    sample standard deviation and range of its repeated scores.
    """
    if len(per_repeat) < 2:
        return None
    rows = [s for s in zip(*per_repeat, strict=True) if None not in s]
    if not rows:
        return {"repeats": len(per_repeat), "entries": 0}
    means = [statistics.fmean(column) for column in zip(*rows, strict=True)]
    return {
        "repeats": len(per_repeat),
        "entries": len(rows),
        "means": means,
        "range_of_means": max(means) - min(means),
        "mean_entry_std": statistics.fmean(statistics.stdev(row) for row in rows),
        "max_entry_range": max(max(row) - min(row) for row in rows),
        "entries_differing": sum(max(row) != min(row) for row in rows),
    }
