"""Learning-rate schedules, as multipliers of the base rate per optimizer step."""

from __future__ import annotations

import math

from lit_sft.errors import InvalidInput

SCHEDULES = ("constant", "cosine")


def warmup_cosine(step: int, warmup_steps: int, total_steps: int, min_lr_ratio: float) -> float:
    """LR multiplier: linear warmup to 1, then cosine decay to `min_lr_ratio` at `total_steps`."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def check_schedule(name: str) -> None:
    """Raises InvalidInput naming the valid schedules unless `name` is one."""
    if name not in SCHEDULES:
        raise InvalidInput(
            f"unknown lr_schedule {name!r}, in module.lr_schedule; choose one of "
            f"{', '.join(SCHEDULES)}"
        )
