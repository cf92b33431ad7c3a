"""`python serve.py ...`: the model of a run (or of `weights=`) behind an OpenAI-compatible API."""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import DictConfig

from lit_sft.cli.errors import one_line_user_errors
from lit_sft.cli.sources import load_source
from lit_sft.errors import InvalidInput
from lit_sft.serving.app import ServerSettings
from lit_sft.serving.server import serve_model

DEFAULT_NAME = "lit_sft"


def api_key(variable: str | None) -> str | None:
    """The key in the environment variable `variable` (None: no key asked)."""
    if variable is None:
        return None
    key = os.environ.get(variable, "")
    if not key:
        raise InvalidInput(
            f"api_key_env={variable}, but the environment variable {variable} is empty or unset; "
            f"export {variable}=<key> before starting the server"
        )
    return key


def settings_of(cfg: DictConfig) -> ServerSettings:
    """The server's name, key and limits from the config."""
    for key in ("max_tokens", "max_batch_size", "max_queue", "max_request_bytes"):
        if int(cfg[key]) < 1:
            raise InvalidInput(f"{key}={cfg[key]}: it must be at least 1")
    name = cfg.model_name
    if name is None:
        name = Path(cfg.run_dir).resolve().name if cfg.run_dir is not None else DEFAULT_NAME
    return ServerSettings(
        str(name), api_key(cfg.api_key_env), cfg.max_tokens, cfg.max_request_bytes
    )


@one_line_user_errors
def task(cfg: DictConfig) -> None:
    """`serve.py`'s task; a user's mistake (missing run, key, options) is one line."""
    settings = settings_of(cfg)
    model, style, _ = load_source(cfg, "serve.py", "serving")
    serve_model(
        model,
        style,
        settings,
        host=str(cfg.host),
        port=int(cfg.port),
        max_batch_size=cfg.max_batch_size,
        max_queue=cfg.max_queue,
        prepack_weights=cfg.prepack_weights,
    )
