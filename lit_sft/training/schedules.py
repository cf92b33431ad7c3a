"""Learning-rate schedules, as multipliers of the base rate per optimizer step."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from lit_sft.errors import InvalidInput

if TYPE_CHECKING:
    import lightning as L

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


def optimizer_steps(trainer: L.Trainer, accumulate_grad_batches: int) -> float:
    """The optimizer steps of the whole fit, as Lightning counts them for its own accumulation.

    A group cut short by the end of an epoch still steps, hence the ceiling.
    """
    batches = trainer.estimated_stepping_batches  # Lightning's own accumulation is always 1 here
    if accumulate_grad_batches == 1 or trainer.max_epochs == -1:
        return batches
    per_epoch = math.ceil(trainer.num_training_batches / accumulate_grad_batches)
    steps = per_epoch * max(trainer.max_epochs or 1, 1)
    return min(steps, trainer.max_steps) if trainer.max_steps != -1 else steps
