"""`python chat.py ...`: talk to a trained model, one message or a session on stdin/stdout."""

from __future__ import annotations

import sys
from pathlib import Path

from omegaconf import DictConfig

from lit_sft.chat import Chat, Sampling
from lit_sft.cli.errors import one_line_user_errors
from lit_sft.cli.sources import load_source
from lit_sft.errors import InvalidInput, MissingFile


def build_chat(cfg: DictConfig) -> Chat:
    """The model of `run_dir` (or `weights=`, `model=`, `prompt=`) with the sampling settings."""
    model, style, _ = load_source(cfg, "chat.py", "chatting with")
    sampling = Sampling(cfg.temperature, cfg.top_k, cfg.max_new_tokens, cfg.seed)
    return Chat(model, style, sampling, cfg.prepack_weights)


def input_text(cfg: DictConfig) -> str:
    """`input=`, or the text of the file `input_file=` names.

    A file's text reaches the model as it is: on the command line, Hydra's override grammar reads
    brackets, commas and colons in `input=` as its own syntax.
    """
    if cfg.input_file is None:
        return cfg.input
    if cfg.input:
        raise InvalidInput("pass input= or input_file=, not both")
    path = Path(cfg.input_file)
    if not path.is_file():
        raise MissingFile(f"input_file={path} is not a file; pass the path of a text file")
    return path.read_text(encoding="utf-8")


def chat(cfg: DictConfig) -> None:
    """One answer for `message=`, else an interactive session on stdin/stdout."""
    session = build_chat(cfg)
    if cfg.message is not None:
        session.reply(cfg.message, input_text(cfg), sys.stdout)
    else:
        session.session(sys.stdin, sys.stdout)


@one_line_user_errors
def task(cfg: DictConfig) -> None:
    """`chat.py`'s task; a user's mistake (missing run, weights, options) is one line."""
    chat(cfg)
