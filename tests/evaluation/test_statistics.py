"""Intervals and agreement against formulas worked by hand (and scipy where it is the reference)."""

from __future__ import annotations

import itertools
import math
import statistics

import numpy as np
import pytest
from scipy import stats

from lit_sft.evaluation.statistics import (
    BOOTSTRAP_RESAMPLES,
    agreement,
    bootstrap_ci,
    normal_ci,
    wilson_ci,
)
from lit_sft.evaluation.summary import summarize

Z = 1.959963984540054  # the 97.5 % normal quantile


def wilson_by_hand(k: int, n: int) -> list[float]:
    p = k / n
    centre = (p + Z**2 / (2 * n)) / (1 + Z**2 / n)
    half = Z / (1 + Z**2 / n) * math.sqrt(p * (1 - p) / n + Z**2 / (4 * n**2))
    return [100 * (centre - half), 100 * (centre + half)]


@pytest.mark.parametrize(("k", "n"), [(3, 10), (0, 5), (5, 5), (1, 1), (37, 50)])
def test_wilson_interval_is_the_formula(k: int, n: int) -> None:
    assert wilson_ci(k, n) == pytest.approx(wilson_by_hand(k, n), abs=1e-9)
    assert wilson_ci(0, 0) is None


def test_normal_interval_is_mean_plus_minus_1_96_standard_errors_clipped() -> None:
    scores = [40.0, 60.0, 50.0, 70.0]
    half = 1.96 * statistics.stdev(scores) / 2
    assert normal_ci(scores) == pytest.approx([55 - half, 55 + half])
    assert normal_ci([0.0, 100.0]) == [0.0, 100.0]  # 50 ± 98: clipped to the scale
    assert normal_ci([50.0]) is None


def test_bootstrap_interval_is_seeded_and_close_to_the_normal_one_for_large_n() -> None:
    rng = np.random.default_rng(1)
    scores = list(rng.integers(0, 101, size=400).astype(float))
    ci = bootstrap_ci(scores)
    assert ci == bootstrap_ci(scores)  # seeded: the same interval every time
    assert ci != bootstrap_ci(scores, seed=1)
    # For 400 scores the mean is close to normal: both intervals agree to a few tenths.
    assert ci == pytest.approx(normal_ci(scores), abs=0.35)
    assert ci[0] < statistics.fmean(scores) < ci[1]


def bca_by_hand(scores: list[float], resamples: int, seed: int) -> list[float]:
    """Efron's BCa interval of the mean: bias from the resamples, acceleration by jackknife."""
    data = np.asarray(scores)
    rng = np.random.default_rng(seed)
    means = rng.choice(data, size=(resamples, len(data))).mean(axis=1)
    # Resampled means equal to the mean (common for scores on a coarse scale) count half.
    below = (np.mean(means < data.mean()) + np.mean(means <= data.mean())) / 2
    z0 = stats.norm.ppf(below)
    jack = np.array([np.delete(data, i).mean() for i in range(len(data))])
    d = jack.mean() - jack
    accel = (d**3).sum() / (6 * ((d**2).sum()) ** 1.5)
    ends = []
    for alpha in (0.025, 0.975):
        z = z0 + stats.norm.ppf(alpha)
        ends.append(float(np.percentile(means, 100 * stats.norm.cdf(z0 + z / (1 - accel * z)))))
    return ends


def test_bootstrap_interval_resamples_ten_thousand_times_and_is_efrons_bca() -> None:
    assert BOOTSTRAP_RESAMPLES >= 10_000
    scores = [0.0, 25.0, 100.0, 75.0, 50.0, 100.0, 0.0, 75.0, 100.0, 50.0, 90.0, 85.0]
    # Other resamples than scipy's: the two agree up to the Monte Carlo error of the ends, one
    # step (5/12) of the mean of 12 such scores with many resamples. A percentile bootstrap
    # gives [41.67, 81.67] here.
    by_hand = bca_by_hand(scores, 200_000, seed=3)
    assert bootstrap_ci(scores, resamples=200_000) == pytest.approx(by_hand, abs=0.5)
    assert bootstrap_ci(scores) == pytest.approx(by_hand, abs=1.0)
    assert bootstrap_ci([70.0] * 5) == [70.0, 70.0]  # no spread, no interval width
    assert bootstrap_ci([70.0]) is None


def test_summary_gives_every_interval_and_wilson_for_exact_match() -> None:
    judged = summarize("judge", [100.0, None, 0.0, 50.0, 75.0], val_loss=None)
    assert judged["bootstrap_ci95"] == bootstrap_ci([100.0, 0.0, 50.0, 75.0])
    assert "wilson_ci95" not in judged and "BCa" in judged["bootstrap_method"]
    exact = summarize("exact_match", [100.0, 0.0, 0.0, 100.0, 100.0], val_loss=None)
    assert exact["wilson_ci95"] == pytest.approx(wilson_by_hand(3, 5))
    assert exact["mean"] == 60.0


def kendall_tau_by_hand(a: list[float], b: list[float]) -> float:
    """τ-a from concordant and discordant pairs (no ties in the data below: τ-a = τ-b)."""
    signs = [
        math.copysign(1, (a[i] - a[j]) * (b[i] - b[j]))
        for i, j in itertools.combinations(range(len(a)), 2)
    ]
    return sum(signs) / len(signs)


def test_agreement_equals_the_formulas_and_scipy_on_hand_built_scores() -> None:
    a = [90.0, 20.0, 75.0, 60.0, 10.0, 85.0, 40.0]
    b = [80.0, 35.0, 50.0, 70.0, 0.0, 95.0, 30.0]
    result = agreement(a, b)
    assert result.n == 7
    assert result.pearson == pytest.approx(np.corrcoef(a, b)[0, 1])
    ranks_a, ranks_b = stats.rankdata(a), stats.rankdata(b)
    assert result.spearman == pytest.approx(np.corrcoef(ranks_a, ranks_b)[0, 1])
    assert result.kendall_tau == pytest.approx(kendall_tau_by_hand(a, b))
    assert result.kendall_tau == pytest.approx(stats.kendalltau(a, b).statistic)
    assert result.mean_abs_diff == pytest.approx(
        sum(abs(x - y) for x, y in zip(a, b, strict=True)) / 7
    )


def test_agreement_with_a_constant_judge_has_no_correlation() -> None:
    result = agreement([50.0, 50.0, 50.0], [10.0, 20.0, 90.0])
    assert (result.pearson, result.spearman, result.kendall_tau) == (None, None, None)
    assert result.mean_abs_diff == pytest.approx((40 + 30 + 40) / 3)
    with pytest.raises(ValueError, match="unequal length"):
        agreement([1.0], [1.0, 2.0])
