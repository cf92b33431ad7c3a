"""A served tiny model on 127.0.0.1 for the tests, and a probe into its decoding steps."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import uvicorn

from lit_sft.generation import generate
from lit_sft.model import GPT
from lit_sft.prompts import PromptStyle, prompt_style
from lit_sft.serving.app import ServedModel, ServerSettings, create_app
from lit_sft.serving.engine import Engine
from lit_sft.tokenizer import Tokenizer

NAME = "tiny"


def expected_answer(
    model: GPT, style: PromptStyle, instruction: str, max_tokens: int, **entry: str
) -> tuple[str, int, int]:
    """(text, prompt tokens, answer tokens) of `generate` on the formatted prompt, alone."""
    tokenizer = Tokenizer()
    prompt = tokenizer.encode(style.prompt({"instruction": instruction, **entry}))
    answer = generate(model, [prompt], max_new_tokens=max_tokens)[0]
    return tokenizer.decode(answer), len(prompt), len(answer)


@dataclass
class Probe:
    """Wraps a model's forward: records each step's batch size, can hold steps back or slow them."""

    model: GPT
    gate: threading.Event = field(default_factory=threading.Event)
    delay_s: float = 0.0
    rows: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.gate.set()
        forward = self.model.hidden_states

        def probed(input_ids: torch.Tensor, **kwargs: object) -> torch.Tensor:
            self.rows.append(input_ids.shape[0])
            self.gate.wait(timeout=30)
            time.sleep(self.delay_s)
            return forward(input_ids, **kwargs)

        self.model.hidden_states = probed  # type: ignore[method-assign]


@dataclass
class Running:
    """A server the test started: its URL and engine."""

    url: str
    engine: Engine
    settings: ServerSettings


@contextmanager
def running_server(
    model: GPT,
    style: str = "alpaca",
    *,
    max_batch_size: int = 8,
    max_queue: int = 16,
    **settings: object,
) -> Iterator[Running]:
    """Serves `model` on a free port of 127.0.0.1 in a thread, until the block ends."""
    engine = Engine(model, Tokenizer(), max_batch_size=max_batch_size, max_queue=max_queue)
    server_settings = ServerSettings(model_name=NAME, **settings)  # type: ignore[arg-type]
    app = create_app(ServedModel(engine, prompt_style(style)), server_settings)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    try:
        yield Running(f"http://127.0.0.1:{sock.getsockname()[1]}", engine, server_settings)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


def wait_until(condition: object, timeout_s: float = 20.0) -> None:
    """Polls `condition()` until it is true; AssertionError after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.005)
