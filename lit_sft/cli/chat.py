"""`python chat.py ...`: talk to a trained model, one message or a session on stdin/stdout."""

from __future__ import annotations

import sys

from omegaconf import DictConfig

from lit_sft.chat import Chat, Sampling
from lit_sft.checkpoints import load_model
from lit_sft.cli.sources import device_of, model_config, source_config, weights_path
from lit_sft.errors import InvalidInput, exit_if_user_error
from lit_sft.prompts import prompt_style


def build_chat(cfg: DictConfig) -> Chat:
    """The model of `run_dir` (or `weights=`, `model=`, `prompt=`) with the sampling settings."""
    if cfg.run_dir is None and (cfg.get("model") is None or cfg.get("prompt") is None):
        raise InvalidInput(
            "chat.py needs run_dir=<run folder>, or weights=<file> model=<size> prompt=<style>"
        )
    source, is_run = source_config(cfg) if cfg.run_dir is not None else (cfg, False)
    weights = weights_path(cfg, source, is_run)
    if weights is None:
        print("no weights given: chatting with a randomly initialised model", file=sys.stderr)
    model = load_model(model_config(source), weights, device_of(cfg.device))
    sampling = Sampling(cfg.temperature, cfg.top_k, cfg.max_new_tokens, cfg.seed)
    return Chat(model, prompt_style(source.prompt.name), sampling, cfg.prepack_weights)


def chat(cfg: DictConfig) -> None:
    """One answer for `message=`, else an interactive session on stdin/stdout."""
    session = build_chat(cfg)
    if cfg.message is not None:
        session.reply(cfg.message, cfg.input, sys.stdout)
    else:
        session.session(sys.stdin, sys.stdout)


def task(cfg: DictConfig) -> None:
    """`chat.py`'s task; a user's mistake (missing run, weights, options) is one line."""
    try:
        chat(cfg)
    except Exception as error:
        exit_if_user_error(error)
        raise
