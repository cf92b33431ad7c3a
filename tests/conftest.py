"""Shared fixtures: the offline tokenizer, one thread, the real Hydra config composed and shrunk."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig

from tests.helpers.config import BOOK_DATA, SHARED, TINY_RUN, compose_config
from tests.helpers.llm_server import FakeLLMServer

if "TIKTOKEN_CACHE_DIR" not in os.environ and (SHARED / "tiktoken-cache").is_dir():
    os.environ["TIKTOKEN_CACHE_DIR"] = str(SHARED / "tiktoken-cache")

# Tiny models gain nothing from a second thread, and two spinning OpenMP threads on a busy 2-core
# machine slow each step by an order of magnitude.
torch.set_num_threads(1)


@pytest.fixture
def tiny_config(tmp_path: Path) -> Callable[..., DictConfig]:
    """Composes a tiny offline run into tmp_path, with extra overrides."""

    def make(*overrides: str, run_dir: Path | None = None) -> DictConfig:
        return compose_config([*TINY_RUN, *overrides], run_dir or tmp_path / "run")

    return make


@pytest.fixture
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """A proxy configured on the machine must not swallow requests meant for a local stand-in."""
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setenv("no_proxy", "127.0.0.1")


@pytest.fixture
def judge_server(no_proxy: None) -> Iterator[FakeLLMServer]:
    """The Ollama / OpenAI-compatible judge stand-in on 127.0.0.1, started and stopped."""
    server = FakeLLMServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def book_data() -> Path:
    if not BOOK_DATA.is_file():
        pytest.skip(f"{BOOK_DATA} is not there")
    return BOOK_DATA
