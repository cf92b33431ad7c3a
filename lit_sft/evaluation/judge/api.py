"""What a judge server's API must provide: one adapter per API, behind one protocol."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import requests

from lit_sft.errors import InvalidInput


@dataclass(frozen=True)
class JudgeSettings:
    """How to reach the judge and how to ask it; the fields of `conf/judge/*.yaml`."""

    # None: from the environment the server's own clients read (OLLAMA_HOST, OPENAI_BASE_URL),
    # else the server's usual local address.
    url: str | None = None
    model: str = "llama3"
    api: str = "ollama"
    timeout_s: float = 120.0
    max_attempts: int = 4
    backoff_s: float = 1.0
    # A 429/503 with Retry-After waits what the server asks, but never longer than this.
    max_retry_after_s: float = 60.0
    # Requests in flight at once, for servers that batch them (vLLM, llama.cpp, Ollama with
    # OLLAMA_NUM_PARALLEL); the scores do not depend on it.
    concurrency: int = 1
    # Scores asked per entry (seeds seed, seed + 1, ...); the entry's score is their mean.
    samples: int = 1
    # Whole scorings of the same answers, kept apart to show the judge's self-consistency; repeat
    # r asks with the seeds after those of repeat r - 1.
    repeats: int = 1
    # What the judge is asked (`lit_sft.evaluation.judge.prompts.PROMPTS`): book (0-100) or rubric.
    prompt: str = "book"
    seed: int = 123
    temperature: float = 0.0
    num_ctx: int = 2048
    stream: bool = True
    # Only the variable's name is kept; the key is read at each request so that it never sits in
    # an object, its repr, a config or a log.
    api_key_env: str = "OPENAI_API_KEY"

    def __post_init__(self) -> None:
        if min(self.max_attempts, self.samples, self.repeats, self.concurrency) < 1:
            raise InvalidInput(
                f"judge.max_attempts ({self.max_attempts}), judge.samples ({self.samples}), "
                f"judge.repeats ({self.repeats}) and judge.concurrency ({self.concurrency}) "
                "must be >= 1"
            )

    def key(self) -> dict[str, Any]:
        """What the scores depend on: the server, the model and how it is asked (not transport).

        `url` is as given; `Judge` resolves None to the environment's address before keying.
        """
        return {
            "scorer": "judge",
            "api": self.api,
            "url": self.url,
            "model": self.model,
            "prompt": self.prompt,
            "temperature": float(self.temperature),  # 0 and 0.0 are one setting
            "seed": self.seed,
            "samples": self.samples,
            "num_ctx": self.num_ctx,
        }


class BadReply(ValueError):
    """A reply that is not the shape the API promises (worth retrying)."""


class ServerAPI(Protocol):
    """A judge server's API: where to ask, what to send, how to read the answer."""

    name: str
    models_path: str  # lists the served models; answering it means the server is up
    start_hint: str  # what to do when the server cannot be reached

    def base_url(self, url: str | None) -> str:
        """The server's root URL, the one this API's paths follow: `url`, else the environment's."""
        ...

    def chat_request(
        self, settings: JudgeSettings, prompt: str, seed: int
    ) -> tuple[str, dict[str, Any]]:
        """The path and JSON body that ask for one reply to `prompt`."""
        ...

    def reply_text(self, resp: requests.Response, stream: bool) -> str:
        """The reply's text; KeyError/IndexError/TypeError/BadReply if it has another shape."""
        ...

    def served_models(self, body: Any) -> list[str]:
        """The model names in the answer to `models_path`."""
        ...

    def model_matches(self, wanted: str, listed: str) -> bool:
        """Whether the served model `listed` is the model `wanted`."""
        ...

    def missing_model_hint(self, model: str) -> str:
        """What to do when the server does not serve `model`."""
        ...

    def api_key(self, settings: JudgeSettings) -> str | None:
        """The key to send as a bearer token, if the API takes one."""
        ...


def json_lines(resp: requests.Response) -> Iterator[dict[str, Any]]:
    """The JSON objects of a newline-delimited streamed reply."""
    for line in resp.iter_lines():
        if line:
            yield json.loads(line)
