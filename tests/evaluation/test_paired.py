"""Paired statistics of two models' scores, checked against scipy and sums worked by hand."""

from __future__ import annotations

import random
from math import comb

import numpy as np
import pytest
from scipy import stats

from lit_sft.errors import InvalidInput
from lit_sft.evaluation.paired import (
    entry_key,
    keyed_scores,
    paired_stats,
)
from lit_sft.evaluation.statistics import BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED


def entries(n: int) -> list[dict[str, str]]:
    return [
        {"instruction": f"Question {i}", "input": "", "output": f"answer {i}"} for i in range(n)
    ]


def keyed(scores: list[float | None]) -> dict[str, float | None]:
    return keyed_scores(entries(len(scores)), scores)


A = [50.0, 60, 70, 80, 90, 40, 30, 20, 55, 65, 75, 85]
B = [60.0, 70, 70, 95, 80, 60, 45, 20, 70, 90, 75, 85]  # 7 wins, 4 ties, 1 loss


def sign_test_by_hand(wins: int, losses: int) -> float:
    """Two-sided exact sign test: twice the binomial tail of the rarer sign, capped at 1."""
    n, k = wins + losses, min(wins, losses)
    return min(1.0, 2 * sum(comb(n, i) for i in range(k + 1)) / 2**n)


def test_paired_stats_match_scipy_and_hand_sums() -> None:
    result = paired_stats(keyed(A), keyed(B))
    differences = np.array(B) - np.array(A)
    assert result.n == 12
    assert result.mean_a == pytest.approx(sum(A) / 12)
    assert result.mean_b == pytest.approx(sum(B) / 12)
    assert result.diff == pytest.approx((sum(B) - sum(A)) / 12)
    assert (result.wins, result.ties, result.losses) == (7, 4, 1)
    assert result.p_value == pytest.approx(sign_test_by_hand(7, 1))  # 0.0703125
    assert result.p_value == pytest.approx(0.0703125)
    reference = stats.bootstrap(
        (differences,), np.mean, n_resamples=20_000, method="percentile", rng=1
    ).confidence_interval
    # The percentile bootstrap, other resamples: the ends agree to about a point here.
    assert result.ci95[0] == pytest.approx(reference.low, abs=1.0)
    assert result.ci95[1] == pytest.approx(reference.high, abs=1.0)
    assert result.ci95[0] < result.diff < result.ci95[1]


def test_losses_and_wins_are_from_b_side() -> None:
    swapped = paired_stats(keyed(B), keyed(A))
    assert (swapped.wins, swapped.losses) == (1, 7)
    assert swapped.diff == pytest.approx(-paired_stats(keyed(A), keyed(B)).diff)


def test_the_interval_is_scipys_paired_bca_bootstrap() -> None:
    result = paired_stats(keyed(A), keyed(B))
    # The same interval asked of scipy the other way round: pairs (a, b) resampled together.
    reference = stats.bootstrap(
        (np.array(A), np.array(B)),
        lambda a, b, axis: np.mean(b - a, axis=axis),
        paired=True,
        n_resamples=BOOTSTRAP_RESAMPLES,
        method="BCa",
        rng=np.random.default_rng(BOOTSTRAP_SEED),
    ).confidence_interval
    assert BOOTSTRAP_RESAMPLES >= 10_000
    assert result.ci95 == pytest.approx((reference.low, reference.high), abs=0.05)


def test_one_entry() -> None:
    result = paired_stats(keyed([40.0]), keyed([70.0]))
    assert (result.n, result.wins, result.ties, result.losses) == (1, 1, 0, 0)
    assert result.diff == 30.0
    assert result.ci95 == (30.0, 30.0)
    assert result.p_value == 1.0  # one sign is no evidence


def test_all_ties() -> None:
    result = paired_stats(keyed([0.0, 100, 100]), keyed([0.0, 100, 100]))
    assert (result.wins, result.ties, result.losses) == (0, 3, 0)
    assert result.diff == 0.0
    assert result.ci95 == (0.0, 0.0)
    assert result.p_value == 1.0


def test_entries_are_matched_by_content_not_position() -> None:
    items = entries(len(A))
    order = list(range(len(A)))
    random.Random(0).shuffle(order)
    shuffled_b = keyed_scores([items[i] for i in order], [B[i] for i in order])
    matched = paired_stats(keyed_scores(items, A), shuffled_b)
    assert matched == paired_stats(keyed(A), keyed(B))
    # Pairing by position would have compared other entries' scores.
    by_position = paired_stats(keyed(A), keyed([B[i] for i in order]))
    assert (by_position.wins, by_position.losses) != (matched.wins, matched.losses)


def test_different_test_splits_are_one_clear_error() -> None:
    other = keyed_scores(entries(13)[1:], B)
    with pytest.raises(InvalidInput, match=r"different test splits .*1 only in A, 1 only in B"):
        paired_stats(keyed(A), other)


def test_a_part_of_the_split_pairs_on_the_entries_both_answered() -> None:
    part = keyed_scores(entries(12)[:5], B[:5])  # evaluate limit=5
    result = paired_stats(keyed(A), part)
    assert (result.n, result.unpaired) == (5, 7)
    assert result.mean_a == pytest.approx(sum(A[:5]) / 5)
    assert paired_stats(part, keyed(A)).unpaired == 7


def test_entries_without_a_score_are_left_out_and_counted() -> None:
    result = paired_stats(keyed([10.0, None, 30.0]), keyed([20.0, 50.0, None]))
    assert (result.n, result.unpaired, result.diff) == (1, 2, 10.0)
    with pytest.raises(InvalidInput, match="no test entry has a score from both"):
        paired_stats(keyed([None, 1.0]), keyed([1.0, None]))


def test_entry_key_is_the_content() -> None:
    entry = {"instruction": "Add 1 + 2", "input": "", "output": "3"}
    assert entry_key(entry) == entry_key({**entry, "model_response": "4"})
    assert entry_key(entry) == entry_key({"instruction": "Add 1 + 2", "output": "3"})
    for field in ("instruction", "output"):
        assert entry_key(entry) != entry_key({**entry, field: entry[field] + " "})
    assert entry_key(entry) != entry_key({**entry, "input": "x"})
    # The fields stay apart: moving text from one field into another is another entry.
    assert entry_key({"instruction": "a", "input": "b", "output": ""}) != entry_key(
        {"instruction": "a", "input": "", "output": "b"}
    )


def test_a_repeated_entry_keeps_both_scores() -> None:
    twice = entries(1) * 2
    scores = keyed_scores(twice, [10.0, 30.0])
    assert sorted(scores.values()) == [10.0, 30.0]
    assert len(scores) == 2
