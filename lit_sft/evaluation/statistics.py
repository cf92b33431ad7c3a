"""Intervals for a mean score and agreement between two scorers, through scipy.stats."""

from __future__ import annotations

import math
import statistics
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats

NORMAL_METHOD = "mean ± 1.96·std/√n (normal approximation), clipped to [0, 100]"
BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0
BOOTSTRAP_METHOD = (
    f"bootstrap of the mean, BCa, {BOOTSTRAP_RESAMPLES} resamples, seed {BOOTSTRAP_SEED} "
    "(scipy.stats.bootstrap)"
)
WILSON_METHOD = "Wilson score interval of the share of exact matches (scipy.stats.binomtest)"


def normal_ci(scores: Sequence[float]) -> list[float] | None:
    """mean ± 1.96·s/√n, clipped to the [0, 100] scale; None for fewer than two scores."""
    if len(scores) < 2:
        return None
    mean, half = statistics.fmean(scores), 1.96 * statistics.stdev(scores) / math.sqrt(len(scores))
    # Scores live in [0, 100]; the normal approximation can reach past either end.
    return [max(0.0, mean - half), min(100.0, mean + half)]


def bootstrap_ci(
    scores: Sequence[float],
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> list[float] | None:
    """The 95 % BCa bootstrap interval of the mean (seeded); None for fewer than two scores."""
    if len(scores) < 2:
        return None
    if len(set(scores)) == 1:  # every resample has the same mean; BCa would divide by zero
        return [float(scores[0])] * 2
    result = stats.bootstrap(
        (np.asarray(scores, dtype=float),),
        np.mean,
        n_resamples=resamples,
        confidence_level=0.95,
        method="BCa",
        rng=np.random.default_rng(seed),
    )
    return [float(result.confidence_interval.low), float(result.confidence_interval.high)]


def wilson_ci(successes: int, n: int) -> list[float] | None:
    """The 95 % Wilson interval of `successes`/`n`, in percent; None when n is 0."""
    if n == 0:
        return None
    ci = stats.binomtest(successes, n).proportion_ci(confidence_level=0.95, method="wilson")
    return [100 * float(ci.low), 100 * float(ci.high)]


@dataclass(frozen=True)
class Agreement:
    """How two scorers' scores of the same entries agree; a correlation is None when undefined."""

    n: int
    pearson: float | None
    spearman: float | None
    kendall_tau: float | None
    mean_abs_diff: float | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def agreement(a: Sequence[float], b: Sequence[float]) -> Agreement:
    """Pearson, Spearman and Kendall's τ (scipy) and the mean |a - b| of paired scores."""
    if len(a) != len(b):
        raise ValueError(f"paired scores of unequal length: {len(a)} and {len(b)}")
    n = len(a)
    mean_abs_diff = statistics.fmean(abs(x - y) for x, y in zip(a, b, strict=True)) if n else None
    if n < 2 or len(set(a)) == 1 or len(set(b)) == 1:
        # A correlation with a constant side is 0/0; scipy warns and gives nan.
        return Agreement(n, None, None, None, mean_abs_diff)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        values = (
            stats.pearsonr(a, b).statistic,
            stats.spearmanr(a, b).statistic,
            stats.kendalltau(a, b).statistic,
        )
    pearson, spearman, kendall = (None if math.isnan(v) else float(v) for v in values)
    return Agreement(n, pearson, spearman, kendall, mean_abs_diff)
