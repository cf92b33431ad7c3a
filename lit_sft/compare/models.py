"""Several models' answers to one test split, compared pair by pair and metric by metric.

Each model comes as a `ModelResults`: its answered entries and, per metric (`exact_match`, a
judge), each entry's score, all keyed by `entry_key`. For every pair (a, b) in the order given and
every metric both have, `compare_models` computes the paired statistics of b against a
(`lit_sft.evaluation.paired`), and lists the entries where the two differ most.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

from lit_sft.errors import InvalidInput
from lit_sft.evaluation.flags import flag_summary, task_of
from lit_sft.evaluation.paired import CI95_METHOD, P_VALUE_METHOD, keyed_scores, paired_stats

WORST_ENTRIES = 10


@dataclass(frozen=True)
class ModelResults:
    """One model's answers (entries with `model_response`) and scores, keyed by entry."""

    name: str
    answers: dict[str, dict[str, Any]]
    scores: dict[str, dict[str, float | None]] = field(default_factory=dict)
    max_new_tokens: int | None = None  # None: unknown (answers made elsewhere)

    @classmethod
    def from_lists(
        cls,
        name: str,
        answered: Sequence[dict[str, Any]],
        scores: Mapping[str, Sequence[float | None]],
        max_new_tokens: int | None = None,
    ) -> ModelResults:
        """From answers and scores in test-split order (as evaluate writes them)."""
        keys = list(keyed_scores(answered, [None] * len(answered)))
        return cls(
            name,
            dict(zip(keys, answered, strict=True)),
            {metric: keyed_scores(answered, values) for metric, values in scores.items()},
            max_new_tokens,
        )


def worst_entries(
    a: ModelResults, b: ModelResults, metric: str, count: int = WORST_ENTRIES
) -> list[dict[str, Any]]:
    """The `count` entries where b's score differs most from a's (largest |b - a| first).

    Entries both scored alike are no difference, and are not listed.
    """
    score_a, score_b = a.scores[metric], b.scores[metric]
    gaps = [
        (abs(score_b[k] - score_a[k]), k)
        for k in score_a
        if score_a[k] is not None and score_b.get(k) is not None and score_a[k] != score_b[k]
    ]
    rows = []
    for _, key in sorted(gaps, key=lambda item: (-item[0], item[1]))[:count]:
        entry = a.answers[key]
        rows.append(
            {
                "key": key,
                "instruction": entry["instruction"],
                "input": entry.get("input") or "",
                "reference": entry["output"],
                "answer_a": entry["model_response"],
                "answer_b": b.answers[key]["model_response"],
                "score_a": score_a[key],
                "score_b": score_b[key],
                "diff": score_b[key] - score_a[key],
            }
        )
    return rows


def task_pairs(a: ModelResults, b: ModelResults, metric: str) -> dict[str, dict[str, Any]]:
    """The paired statistics of b against a within each task, where the entries have tasks.

    A mean over all entries hides a gain on one task paid for by a loss on another; per task,
    each difference keeps its own interval. Empty where no entry has a task.
    """
    score_a, score_b = a.scores[metric], b.scores[metric]
    keys_of: dict[str, list[str]] = defaultdict(list)
    for key, entry in a.answers.items():
        if score_a.get(key) is not None and score_b.get(key) is not None:
            keys_of[task_of(entry) or "(none)"].append(key)
    if set(keys_of) <= {"(none)"}:
        return {}
    return {
        task: paired_stats(
            {k: score_a[k] for k in keys}, {k: score_b[k] for k in keys}, names=(a.name, b.name)
        ).as_dict()
        for task, keys in sorted(keys_of.items())
    }


def compare_pair(
    a: ModelResults, b: ModelResults, metric: str, worst: int = WORST_ENTRIES
) -> dict[str, Any]:
    """The paired statistics of b against a on `metric`, and the entries they differ most on."""
    score_a, score_b = a.scores[metric], b.scores[metric]
    stats = paired_stats(score_a, score_b, names=(a.name, b.name))
    return {
        "a": a.name,
        "b": b.name,
        "metric": metric,
        **stats.as_dict(),
        "by_task": task_pairs(a, b, metric),
        "worst": worst_entries(a, b, metric, worst) if worst else [],
        "entry_differences": {
            key: score_b[key] - score_a[key]
            for key in sorted(score_a)
            if score_a[key] is not None and score_b.get(key) is not None
        },
    }


def compare_models(models: Sequence[ModelResults], worst: int = WORST_ENTRIES) -> dict[str, Any]:
    """Every figure of a comparison: each model's flags and means, each pair's paired stats."""
    names = [model.name for model in models]
    if len(models) < 2 or len(set(names)) != len(names):
        raise InvalidInput(
            f"a comparison needs two or more models with different names, got {names}; "
            "name each run or evaluation folder once"
        )
    pairs = [
        compare_pair(a, b, metric, worst)
        for a, b in combinations(models, 2)
        for metric in sorted(a.scores.keys() & b.scores.keys())
    ]
    if not pairs:
        raise InvalidInput(
            f"the models {names} share no metric; score them the same way (scorer=exact_match or "
            "the same judge) before comparing"
        )
    return {
        "models": {
            model.name: {
                "entries": len(model.answers),
                "metrics": {
                    metric: _mean([s for s in scores.values() if s is not None])
                    for metric, scores in model.scores.items()
                },
                "flags": flag_summary(list(model.answers.values()), model.max_new_tokens),
            }
            for model in models
        },
        "pairs": pairs,
        "methods": {
            "diff": "mean of b - a over the entries both were scored on",
            "ci95": CI95_METHOD,
            "p_value": P_VALUE_METHOD,
            "wins": "entries where b scored higher than a (losses: lower; ties: equal)",
        },
    }


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None
