"""Learning-rate multipliers against values worked out by hand."""

from __future__ import annotations

import math

import pytest

from lit_sft.training.schedules import check_schedule, warmup_cosine


def test_warmup_then_cosine_decay() -> None:
    values = [warmup_cosine(step, 4, 20, 0.1) for step in range(21)]
    assert values[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert values[4] == 1.0 and values[20] == pytest.approx(0.1)
    assert values[12] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert all(a >= b for a, b in zip(values[4:], values[5:], strict=False))
    # Past the end it stays at the floor; a one-step decay is already at the floor.
    assert warmup_cosine(30, 4, 20, 0.1) == pytest.approx(0.1)
    assert warmup_cosine(1, 0, 1, 0.0) == pytest.approx(0.0)


def test_unknown_schedule_names_the_valid_ones() -> None:
    with pytest.raises(
        ValueError,
        match=r"^unknown lr_schedule 'linear', in module\.lr_schedule; "
        r"choose one of constant, cosine$",
    ):
        check_schedule("linear")
    check_schedule("cosine")
