"""Evaluation results (`ScoredResult`s) as one `ModelResults` per set of answers."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import fields
from itertools import combinations
from pathlib import Path
from typing import Any

from lit_sft.compare.models import WORST_ENTRIES, ModelResults, compare_models
from lit_sft.compare.pairwise import judge_pairwise, win_rate
from lit_sft.compare.render import markdown
from lit_sft.errors import InvalidInput
from lit_sft.evaluation.judge import Judge, JudgeSettings
from lit_sft.evaluation.results import ScoredResult


def folder_of(answers: Path) -> Path:
    """The run or `out=` folder a set of answers was given as (the parent of its eval/)."""
    eval_dir = answers.parent
    return eval_dir.parent if eval_dir.name == "eval" else eval_dir


def model_names(answer_sets: Sequence[Path]) -> dict[Path, str]:
    """A name per set of answers: its folder's name, with the answers' own where that repeats."""
    folders = [folder_of(path).name for path in answer_sets]
    names = {}
    for path, folder in zip(answer_sets, folders, strict=True):
        names[path] = folder if folders.count(folder) == 1 else f"{folder}/{path.name}"
    if len(set(names.values())) != len(names):
        raise InvalidInput(
            f"two result folders share a name ({sorted(names.values())}); give each model's "
            "evaluation folder its own name"
        )
    return names


def models_from_results(results: Sequence[ScoredResult]) -> list[ModelResults]:
    """One model per set of answers, in the order given, each with every scorer's scores."""
    by_answers: dict[Path, list[ScoredResult]] = {}
    for result in results:
        by_answers.setdefault(result.answers.path, []).append(result)
    names = model_names(list(by_answers))
    models = []
    for path, scored in by_answers.items():
        answered = json.loads(scored[0].answers.answers.read_text(encoding="utf-8"))
        kept = [i for i, record in enumerate(answered) if record is not None]
        generation = scored[0].answers_settings.get("generation") or {}
        models.append(
            ModelResults.from_lists(
                names[path],
                [answered[i] for i in kept],
                {r.scores_dir.path.name: [r.scores.get(i) for i in kept] for r in scored},
                generation.get("max_new_tokens"),
            )
        )
    return models


def judge_of(results: Sequence[ScoredResult], overrides: dict[str, Any]) -> JudgeSettings:
    """The settings of the judge that scored the results (the first found), with `overrides`."""
    names = {f.name for f in fields(JudgeSettings)}
    scored = [r.scorer for r in results if r.scorer.get("scorer") == "judge"]
    given = {k: v for k, v in overrides.items() if v is not None}
    if not scored and "model" not in given:
        raise InvalidInput(
            "--pairwise needs a judge: none scored these results; score them with one "
            "(python evaluate.py ... scorer=judge), or pass --judge-model and --judge-url"
        )
    found = {k: v for k, v in (scored[0] if scored else {}).items() if k in names}
    return JudgeSettings(**(found | given))


def models_report(
    results: Sequence[ScoredResult],
    *,
    worst: int = WORST_ENTRIES,
    pairwise: dict[str, Any] | None = None,
    verdicts: Path | None = None,
) -> tuple[str, dict[str, Any]]:
    """The paired comparison of every two sets of answers (a Report); one set: nothing to do.

    With `pairwise` (judge settings to override those of the judge that scored the results, or
    {}), each pair is also judged head to head, its verdicts kept in `verdicts`.
    """
    models = models_from_results(results)
    if len(models) < 2:
        return "", {}
    comparison = compare_models(models, worst)
    if pairwise is not None and verdicts is not None:
        with Judge(judge_of(results, pairwise)) as judge:
            comparison["pairwise"] = [
                win_rate(a.name, b.name, judge_pairwise(a, b, judge, verdicts))
                for a, b in combinations(models, 2)
            ]
    return markdown(comparison), comparison
