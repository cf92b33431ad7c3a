"""Two models' scores on the same test entries, compared entry by entry (paired statistics).

Entries are matched by content (`entry_key`), never by position, so two answers files in different
orders compare correctly and two different test splits are an error. Every figure is B against A:
`diff = mean_b - mean_a`, a *win* is an entry where B scored higher than A, a *loss* where lower.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.stats import binomtest

from lit_sft.errors import InvalidInput
from lit_sft.evaluation.statistics import BOOTSTRAP_METHOD, bootstrap_ci

P_VALUE_METHOD = (
    "two-sided exact sign test (scipy.stats.binomtest of wins among wins + losses, p = 0.5); "
    "ties carry no sign and are left out, so with no wins or losses p = 1 (no evidence of a "
    "difference), and with one entry p = 1 (one sign proves nothing)"
)
CI95_METHOD = f"paired: the entries' B - A differences resampled; {BOOTSTRAP_METHOD}"


def entry_key(entry: Mapping[str, Any]) -> str:
    """A short hash of an entry's instruction, input and reference output: its identity."""
    content = [entry["instruction"], entry.get("input") or "", entry["output"]]
    return hashlib.sha256(json.dumps(content).encode("utf-8")).hexdigest()[:16]


def keyed_scores(
    entries: Sequence[Mapping[str, Any]], scores: Sequence[float | None]
) -> dict[str, float | None]:
    """Each entry's score under its `entry_key`; an entry repeated in the split gets `key#2`, ...

    Repeats of one entry have the same prompt and so the same greedy answer; numbering them in
    order keeps every score without caring which copy is which.
    """
    if len(entries) != len(scores):
        raise ValueError(f"{len(entries)} entries but {len(scores)} scores")
    seen: Counter[str] = Counter()
    keyed = {}
    for entry, score in zip(entries, scores, strict=True):
        key = entry_key(entry)
        seen[key] += 1
        keyed[key if seen[key] == 1 else f"{key}#{seen[key]}"] = score
    return keyed


def paired_arrays(
    a: Mapping[str, float | None],
    b: Mapping[str, float | None],
    names: tuple[str, str] = ("A", "B"),
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The keys scored by both models and their scores, in key order.

    One model's entries may be a part of the other's (an evaluation with `limit`, or stopped):
    the pair is the entries both answered. Entries each model has and the other lacks mean two
    test splits: an error. An entry that one model's scorer failed on (None) is left out.
    """
    only_a, only_b = len(a.keys() - b.keys()), len(b.keys() - a.keys())
    if only_a and only_b:
        raise InvalidInput(
            f"{names[0]} and {names[1]} answered different test splits ({len(a)} and {len(b)} "
            f"entries; {only_a} only in {names[0]}, {only_b} only in {names[1]}), so their scores "
            "cannot be paired; evaluate both on the same data (data.path, fractions, seed)"
        )
    keys = sorted(k for k in a.keys() & b.keys() if a[k] is not None and b[k] is not None)
    return keys, np.array([a[k] for k in keys], float), np.array([b[k] for k in keys], float)


def mean_ci95(values: np.ndarray) -> tuple[float, float]:
    """The bootstrap 95 % interval of the mean of `values` (`statistics.bootstrap_ci`).

    One value has no spread to resample: its interval is the value itself.
    """
    ci = bootstrap_ci(values.tolist()) or [float(values.mean())] * 2
    return ci[0], ci[1]


def sign_test_p(wins: int, losses: int) -> float:
    """The two-sided exact sign test's p-value (see P_VALUE_METHOD); 1.0 with no signs."""
    if wins + losses == 0:
        return 1.0
    return float(binomtest(wins, wins + losses, 0.5).pvalue)


@dataclass(frozen=True)
class PairedStats:
    """B against A on the entries both were scored on (see the module docstring for the signs)."""

    n: int
    mean_a: float
    mean_b: float
    diff: float
    ci95: tuple[float, float]
    wins: int
    ties: int
    losses: int
    p_value: float
    unpaired: int

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ci95": list(self.ci95)}


def paired_stats(
    a: Mapping[str, float | None],
    b: Mapping[str, float | None],
    *,
    names: tuple[str, str] = ("A", "B"),
) -> PairedStats:
    """Means, B - A difference with its bootstrap interval, wins/ties/losses and sign-test p.

    `a` and `b` map `entry_key`s to scores (`keyed_scores`); `unpaired` counts the entries left
    out because one of the two has no score (or did not answer it).
    """
    keys, score_a, score_b = paired_arrays(a, b, names)
    if not keys:
        raise InvalidInput(
            f"no test entry has a score from both {names[0]} and {names[1]} ({len(a)} entries); "
            "score them again (a judge that failed on every entry?)"
        )
    differences = score_b - score_a
    wins, losses = int((differences > 0).sum()), int((differences < 0).sum())
    return PairedStats(
        n=len(keys),
        mean_a=float(score_a.mean()),
        mean_b=float(score_b.mean()),
        diff=float(differences.mean()),
        ci95=mean_ci95(differences),
        wins=wins,
        ties=len(keys) - wins - losses,
        losses=losses,
        p_value=sign_test_p(wins, losses),
        unpaired=len(a.keys() | b.keys()) - len(keys),
    )
