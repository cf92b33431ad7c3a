"""Keyed result folders: claiming one for a set of settings, and reading a scorer's scores back."""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lit_sft.errors import InvalidInput
from lit_sft.evaluation.judge.store import read_all_scores
from lit_sft.files import write_json_atomic
from lit_sft.run_dir import AnswersDir, EvalDir, ScoresDir, read_json


def claim(settings_path: Path, settings: Mapping[str, Any]) -> None:
    """Records `settings` for a new result folder; refuses one that holds other settings.

    Folder names carry a hash of their settings, so a mismatch means the folder was edited or
    copied by hand: its results must not pass for these settings'.
    """
    found = read_json(settings_path)
    if found is None:
        write_json_atomic(settings_path, dict(settings))
    elif found != settings:
        raise InvalidInput(
            f"{settings_path.parent} holds results of other settings than its name says "
            f"({settings_path} differs from {dict(settings)}); move that folder away"
        )


def write_scores(path: Path, scores: Sequence[float]) -> None:
    """A computed scorer's scores (exact match), a JSON line per entry, written at once."""
    lines = [
        json.dumps({"index": i, "repeat": 0, "score": s, "samples": [s], "error": None})
        for i, s in enumerate(scores)
    ]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    tmp.replace(path)


def entry_scores(path: Path) -> dict[int, float]:
    """Each entry's score in a scores file: the mean of its scored repeats (failures left out)."""
    by_entry: dict[int, list[float]] = {}
    for (index, _), result in read_all_scores(path).items():
        if result.score is not None:
            by_entry.setdefault(index, []).append(result.score)
    return {i: statistics.fmean(s) for i, s in sorted(by_entry.items())}


@dataclass(frozen=True)
class ScoredResult:
    """One scorer's scores of one set of answers, as a comparison reads them."""

    answers: AnswersDir
    scores_dir: ScoresDir
    answers_settings: dict[str, Any]
    scorer: dict[str, Any]
    scores: dict[int, float]  # entry index -> score
    summary: dict[str, Any] | None

    @property
    def name(self) -> str:
        """`<answers>/<scorer>`: where the result lives under eval/."""
        return f"{self.answers.path.name}/{self.scores_dir.path.name}"


def read_results(eval_dir: EvalDir) -> list[ScoredResult]:
    """Every scored result in an evaluation folder."""
    results = []
    for answers in eval_dir.answers_dirs():
        for scored in answers.scores_dirs():
            results.append(
                ScoredResult(
                    answers,
                    scored,
                    read_json(answers.settings) or {},
                    read_json(scored.settings) or {},
                    entry_scores(scored.scores),
                    read_json(scored.summary),
                )
            )
    return results
