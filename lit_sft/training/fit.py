"""The fit of one run: validate the untrained model, train, validate the final weights."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L

from lit_sft.run_dir import RunDir
from lit_sft.training.callbacks import RunSummary

log = logging.getLogger(__name__)


def resume_path(ckpt_path: str | None, run_dir: Path) -> str | None:
    """`ckpt_path`, with `last` meaning the run folder's newest resumable checkpoint (None, and a
    warning, before it has one: a preset may say `last` before the first run)."""
    if ckpt_path != "last":
        return ckpt_path
    checkpoint = RunDir(run_dir).resumable_checkpoint()
    if checkpoint is None:
        log.warning("ckpt_path=last: %s has no checkpoint yet; training from the start", run_dir)
        return None
    return str(checkpoint)


def fit(
    trainer: L.Trainer,
    module: L.LightningModule,
    datamodule: L.LightningDataModule,
    summary: RunSummary,
    ckpt_path: str | None,
) -> dict[str, Any]:
    """Validates the untrained model, trains, validates the final one; returns the summary."""
    if ckpt_path is None:
        # The book's curves start with the untrained model's losses; so do ours (step 0).
        trainer.validate(module, datamodule=datamodule, verbose=False)
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    if summary.validated_step != trainer.global_step:
        # Training ended between two validations: the summary describes the final weights.
        trainer.validate(module, datamodule=datamodule, verbose=False)
    return summary.write(trainer, module)
