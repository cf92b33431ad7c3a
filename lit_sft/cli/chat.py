"""`python chat.py ...`: talk to a trained model, one message or a session on stdin/stdout."""

from __future__ import annotations

import sys

from omegaconf import DictConfig

from lit_sft.chat import Chat, Sampling
from lit_sft.cli.errors import one_line_user_errors
from lit_sft.cli.sources import load_source


def build_chat(cfg: DictConfig) -> Chat:
    """The model of `run_dir` (or `weights=`, `model=`, `prompt=`) with the sampling settings."""
    model, style, _ = load_source(cfg, "chat.py", "chatting with")
    sampling = Sampling(cfg.temperature, cfg.top_k, cfg.max_new_tokens, cfg.seed)
    return Chat(model, style, sampling, cfg.prepack_weights)


def chat(cfg: DictConfig) -> None:
    """One answer for `message=`, else an interactive session on stdin/stdout."""
    session = build_chat(cfg)
    if cfg.message is not None:
        session.reply(cfg.message, cfg.input, sys.stdout)
    else:
        session.session(sys.stdin, sys.stdout)


@one_line_user_errors
def task(cfg: DictConfig) -> None:
    """`chat.py`'s task; a user's mistake (missing run, weights, options) is one line."""
    chat(cfg)
