"""What an entry point that loads a model reads from its config: the run, the weights, the device.

`evaluate.py`, `chat.py`, `serve.py` (and any later command that loads a trained model) take either
`run_dir=<run folder>` (model, prompt style and data come from the run's own config) or
`weights=<file> model=<size> prompt=<style>`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from lit_sft.checkpoints import load_model, resolve_weights
from lit_sft.errors import InvalidInput
from lit_sft.model import GPT
from lit_sft.prompts import PromptStyle, prompt_style
from lit_sft.run_dir import RunDir


def source_config(cfg: DictConfig) -> tuple[DictConfig, bool]:
    """The config naming model, prompt and data (the run's own if `run_dir` is a run), and is it."""
    run_dir = RunDir(cfg.run_dir)
    if run_dir.is_run():
        given = [group for group in ("model", "prompt") if cfg.get(group) is not None]
        if given:
            raise InvalidInput(
                f"{run_dir.path} is a training run and brings its own model and prompt; drop "
                f"{', '.join(given)}=, or evaluate weights=<file> without run_dir"
            )
        source = OmegaConf.load(run_dir.config)
        # The saved run_dir is Hydra's output folder of the training job; here it is this folder.
        source.run_dir = str(run_dir.path)
        return source, True
    if cfg.get("model") is None or cfg.get("prompt") is None:
        raise InvalidInput(
            f"{run_dir.path} is not a training run (no .hydra/config.yaml): "
            "pass run_dir=<run folder>, or weights=<file> model=<size> prompt=<style> [data=...]"
        )
    return cfg, False


def weights_path(cfg: DictConfig, source: DictConfig, is_run: bool) -> Path | None:
    """`weights=` if given, else the run's weights, else what the model config names."""
    weights = cfg.weights
    if weights is None:
        weights = str(RunDir(cfg.run_dir).trained_weights()) if is_run else source.model.weights
    return resolve_weights(
        weights,
        source.model.hub_repo,
        revision=source.model.get("revision"),  # runs written before it existed lack it
        cache_dir=cfg.hub.cache_dir,
        endpoint=cfg.hub.endpoint,
    )


def model_config(source: DictConfig) -> dict[str, Any]:
    """The GPT architecture `source` (a run's config, or this one) names."""
    # Run folders written before `arch` carried it keep tie_weights beside `arch`.
    return {
        "tie_weights": source.model.tie_weights,
        **OmegaConf.to_container(source.model.arch, resolve=True),
    }


def device_of(device: str) -> str:
    """`device`, with auto meaning cuda if available, else cpu."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def load_source(cfg: DictConfig, command: str, doing: str) -> tuple[GPT, PromptStyle, DictConfig]:
    """The model of `run_dir` (or `weights=`, `model=`, `prompt=`), its prompt style and config."""
    if cfg.run_dir is None and (cfg.get("model") is None or cfg.get("prompt") is None):
        raise InvalidInput(
            f"{command} needs run_dir=<run folder>, or weights=<file> model=<size> prompt=<style>"
        )
    source, is_run = source_config(cfg) if cfg.run_dir is not None else (cfg, False)
    weights = weights_path(cfg, source, is_run)
    if weights is None:
        print(f"no weights given: {doing} a randomly initialised model", file=sys.stderr)
    model = load_model(model_config(source), weights, device_of(cfg.device))
    return model, prompt_style(source.prompt.name), source
