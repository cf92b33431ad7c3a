"""A quiet console: one header line when a run starts, one closing line when it ends, no adverts."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# Lightning advertises its cloud products ("💡 Tip: ... litlogger", "... litmodels") through
# this logger at INFO level on every run.
LIGHTNING_INFO_LOGGER = "lightning.pytorch.utilities.rank_zero"
ADVERT_PREFIX = "💡 Tip:"


class DropAdverts(logging.Filter):
    """Drops third-party product tips, keeps every other record."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(ADVERT_PREFIX)


def quiet_lightning() -> None:
    """Stops Lightning's product tips (once per process: the filter is not added twice)."""
    logger = logging.getLogger(LIGHTNING_INFO_LOGGER)
    if not any(isinstance(f, DropAdverts) for f in logger.filters):
        logger.addFilter(DropAdverts())


def weights_source(weights: str | None, hub_repo: str | None, path: Path | None) -> str:
    """Where the starting weights come from, in words."""
    if weights is None:
        return "random init"
    if weights == "pretrained":
        return f"pretrained {hub_repo} ({path})"
    return str(path)


def header_line(
    *,
    model: str,
    parameters: int,
    weights: str,
    prompt: str,
    mask_instructions: bool,
    split_sizes: Mapping[str, int],
    run_dir: str | Path,
) -> str:
    """One line saying what a run trains on what, and where it writes."""
    masking = "response tokens only" if mask_instructions else "all tokens"
    sizes = ", ".join(f"{name} {size}" for name, size in split_sizes.items())
    return (
        f"training {model} ({parameters / 1e6:.1f}M parameters) from {weights}; prompt {prompt}, "
        f"loss on {masking}; entries: {sizes}; run folder {run_dir}"
    )


def closing_line(summary: Mapping[str, Any], run_dir: str | Path) -> str:
    """One line with the final losses, the time taken and where the files are."""
    names = {"train_loss": "train", "val_loss": "val", "val_response_loss": "val response"}
    losses = ", ".join(f"{names[k]} {summary[k]:.4f}" for k in names if k in summary)
    return (
        f"finished {summary['steps']} steps in {summary['wall_time_s']:.1f} s; final loss "
        f"{losses or '—'}; summary.json, weights and logs in {run_dir}"
    )
