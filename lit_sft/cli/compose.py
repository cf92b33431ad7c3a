"""Configs as plain dicts for commands outside Hydra's entry points (`python -m lit_sft.export`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.errors import MissingConfigException
from omegaconf import OmegaConf

from lit_sft.errors import InvalidInput

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


def named_model_config(model: str) -> dict[str, Any]:
    """The training config with `model=<model>`, resolved, as plain values."""
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(config_name="config", overrides=[f"model={model}"])
    except MissingConfigException as error:
        raise InvalidInput(
            f"unknown model {model!r}; choose one of {', '.join(error.options or [])}"
        ) from None
    cfg.run_dir = "."  # Hydra's output folder, unknown outside a Hydra run
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


def saved_config(path: Path, run_dir: Path, keys: Sequence[str] | None = None) -> dict[str, Any]:
    """A config Hydra saved in `run_dir` (.hydra/config.yaml, eval/.hydra/config.yaml), resolved;
    with `keys`, only those of its top-level keys it has (evaluate's own config holds groups, such
    as `data` with its `${prompt.name}`, that evaluating a run leaves unresolvable)."""
    cfg = OmegaConf.load(path)
    # The saved run_dir is Hydra's output folder of the job; here it is this folder.
    cfg.run_dir = str(run_dir)
    if keys is not None:
        return {key: OmegaConf.to_container(cfg[key], resolve=True) for key in keys if key in cfg}
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
