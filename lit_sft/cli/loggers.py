"""A run's Lightning loggers, built from its `logger` config group."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hydra.utils import instantiate
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig


def build_loggers(
    logger_cfg: DictConfig | None, reopen: Mapping[str, dict[str, Any]] | None = None
) -> dict[str, Logger]:
    """The run's loggers by config key (`logger=[tensorboard,csv]` gives two), `reopen` applied."""
    if logger_cfg is None:
        return {}
    # Run folders written before the logger group held several loggers name one at its top.
    configs = {"tensorboard": logger_cfg} if "_target_" in logger_cfg else logger_cfg
    reopen = reopen or {}
    return {
        name: instantiate(config, **reopen.get(name, {}))
        for name, config in configs.items()
        if config is not None
    }
