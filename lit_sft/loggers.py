"""What a run writes through its Lightning loggers, whichever they are, and reopening them later.

Scalars and hyperparameters go through the loggers' common API; text goes to each logger that
keeps text in its own way (TensorBoard's text tab, a wandb table, an MLflow artifact).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from lightning.pytorch.loggers import (
    CSVLogger,
    Logger,
    MLFlowLogger,
    TensorBoardLogger,
    WandbLogger,
)


def log_text(loggers: Iterable[Logger], key: str, text: str, step: int) -> None:
    """`text` under `key` at `step` in every logger that keeps text (CSV does not)."""
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_text(key, text, step)
        elif isinstance(logger, WandbLogger):
            logger.log_text(key, columns=["step", "text"], data=[[step, text]], step=step)
        elif isinstance(logger, MLFlowLogger):
            logger.experiment.log_text(logger.run_id, text, f"{key}/step-{step:06d}.md")


def log_final(
    loggers: Iterable[Logger], hparams: Mapping[str, Any], metrics: Mapping[str, float], step: int
) -> None:
    """The run's hyperparameters and final metrics, paired where the logger can (TensorBoard)."""
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            # Passing the metrics with the hyperparameters fills TensorBoard's HParams table.
            logger.log_hyperparams(dict(hparams), dict(metrics))
        else:
            logger.log_hyperparams(dict(hparams))
            logger.log_metrics(dict(metrics), step)
        logger.save()


def log_scalars(loggers: Sequence[Logger], scalars: Mapping[str, float], step: int) -> None:
    """Scalars at `step` in every logger, saved at once (evaluate's loggers live briefly)."""
    for logger in loggers:
        logger.log_metrics(dict(scalars), step)
        logger.finalize("success")
    finish(loggers)


def finish(loggers: Iterable[Logger]) -> None:
    """Ends the runs that outlive a fit (wandb's), so the next run of a sweep gets its own."""
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            logger.experiment.finish()


def reopen_arguments(logger: Logger) -> dict[str, Any]:
    """Constructor arguments that make a new logger of this kind write into the same run."""
    if isinstance(logger, WandbLogger):
        # The id exists once the run does; asking for the experiment starts it.
        return {"id": logger.experiment.id, "resume": "allow"}
    if isinstance(logger, MLFlowLogger):
        return {"run_id": logger.run_id}
    if isinstance(logger, CSVLogger):
        # A CSVLogger opened on an existing folder deletes its metrics.csv, so later values go to
        # a sibling folder of the run's own.
        return {"version": "eval"}
    return {}
