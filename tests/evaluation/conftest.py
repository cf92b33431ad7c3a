"""Fixtures of the evaluation tests: one tiny trained run, a judge stand-in."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.evaluation.support import score_of, train_tiny_run
from tests.helpers.llm_server import FakeLLMServer, Reply


@pytest.fixture(autouse=True)
def _no_proxy(no_proxy: None) -> None:
    """Every evaluation test talks to stand-ins on 127.0.0.1."""


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder as `python train.py` leaves it (copy it with `copy_run` before evaluating)."""
    return train_tiny_run(tmp_path_factory.mktemp("tiny_run"))


@pytest.fixture
def two_judges() -> Iterator[FakeLLMServer]:
    """One server with two judge models, llama3 and qwen2, that score each question differently."""
    server = FakeLLMServer(models=["llama3:latest", "qwen2:latest"])
    server.reply_by_model = {
        "llama3": lambda body: Reply(text=str(score_of(body))),
        "qwen2": lambda body: Reply(text=str(score_of(body, salt=37))),
    }
    server.start()
    yield server
    server.stop()
