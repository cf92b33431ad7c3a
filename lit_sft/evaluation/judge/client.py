"""The judge client: asks a judge LLM for a 0-100 score per answer, with retries and backoff."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import TypeVar

import requests

from lit_sft.errors import InvalidInput, UserError
from lit_sft.evaluation.judge.api import BadReply, JudgeSettings, ServerAPI
from lit_sft.evaluation.judge.ollama import OllamaAPI
from lit_sft.evaluation.judge.openai import OpenAIAPI
from lit_sft.evaluation.judge.prompts import prompt_named

T = TypeVar("T")
APIS: Mapping[str, ServerAPI] = {api.name: api for api in (OllamaAPI(), OpenAIAPI())}


@dataclass(frozen=True)
class JudgeResult:
    """The mean score of one entry (None on failure), the integer of each sample, and the error."""

    score: float | None
    samples: list[int]
    error: str | None = None


class JudgeUnavailable(UserError, RuntimeError):
    """The judge server cannot be reached or does not serve the judge model."""


class _HTTPStatus(Exception):
    """A reply with an HTTP error status."""

    def __init__(self, status: int, body: str, retry_after_s: float | None = None) -> None:
        super().__init__(f"HTTP {status}: {body[:300]}")
        self.status = status
        self.retry_after_s = retry_after_s

    @property
    def transient(self) -> bool:
        return self.status >= 500 or self.status in (408, 429)


def retry_after_s(value: str | None) -> float | None:
    """Seconds a Retry-After header asks to wait (seconds or an HTTP date); None if unreadable."""
    value = (value or "").strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


def server_api(name: str) -> ServerAPI:
    """The adapter of the API called `name`."""
    try:
        return APIS[name]
    except KeyError:
        raise InvalidInput(f"unknown judge api {name!r}; choose one of {', '.join(APIS)}") from None


class Judge:
    """A judge LLM behind one of the server APIs in `APIS`."""

    def __init__(
        self, settings: JudgeSettings, *, sleep: Callable[[float], None] = time.sleep
    ) -> None:
        self.api = server_api(settings.api)
        self.settings = replace(settings, url=self.api.base_url(settings.url))
        self.prompt = prompt_named(settings.prompt)
        self._sleep = sleep
        # One session per thread (`concurrency` > 1 scores from several): requests' sessions
        # are not meant to be shared between threads.
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._sessions_lock = threading.Lock()

    def __repr__(self) -> str:
        s = self.settings
        return (
            f"Judge(url={s.url!r}, model={s.model!r}, api={s.api!r}, prompt={s.prompt!r}, "
            f"samples={s.samples}, "
            f"api_key_env={s.api_key_env!r})"
        )

    def __enter__(self) -> Judge:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the HTTP connections."""
        with self._sessions_lock:
            for session in self._sessions:
                session.close()

    @property
    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
            with self._sessions_lock:
                self._sessions.append(session)
        return session

    def check_ready(self) -> None:
        """Raise JudgeUnavailable unless the server answers and serves the judge model."""
        s = self.settings
        try:
            resp = self._session.get(
                s.url + self.api.models_path, headers=self._headers(), timeout=s.timeout_s
            )
        except requests.RequestException as exc:
            message = (
                f"cannot reach the {s.api} judge server at {s.url} ({exc}); {self.api.start_hint}"
            )
            raise JudgeUnavailable(self._redact(message)) from None
        if resp.status_code >= 400:
            raise JudgeUnavailable(self._redact(self._status_message(resp)))
        try:
            names = self.api.served_models(resp.json())
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise JudgeUnavailable(
                f"the server at {s.url} does not answer like {s.api}: {resp.text[:300]!r}"
            ) from exc
        if not any(self.api.model_matches(s.model, name) for name in names):
            served = ", ".join(names) if names else "no models"
            raise JudgeUnavailable(
                f"judge model {s.model!r} is not on the {s.api} server at {s.url} "
                f"(it serves: {served}); {self.api.missing_model_hint(s.model)}"
            )

    def score(
        self, instruction: str, reference: str, response: str, *, repeat: int = 0
    ) -> JudgeResult:
        """Score one response; failures come back as a result with score None and the error.

        Repeat r of a self-consistency check asks with its own seeds, after those of repeats < r.
        """
        prompt = self.prompt.build(instruction, reference, response)
        samples: list[int] = []
        first_seed = self.settings.seed + repeat * self.settings.samples
        for i in range(self.settings.samples):
            score, error = self._sample(prompt, first_seed + i)
            if score is None:
                return JudgeResult(score=None, samples=samples, error=error)
            samples.append(score)
        return JudgeResult(score=sum(samples) / len(samples), samples=samples, error=None)

    def _sample(self, prompt: str, seed: int) -> tuple[int | None, str | None]:
        """One score with retries, or None and the last error once the attempts are spent."""
        return self.ask(prompt, self.prompt.parse, seed)

    def ask(self, prompt: str, parse: Callable[[str], T], seed: int) -> tuple[T | None, str | None]:
        """`parse` of the reply to `prompt`, with retries; None and the last error once spent.

        `parse` raises ValueError on a reply it cannot read, which is retried like a server error.
        """
        s = self.settings
        error, attempts = "", s.max_attempts
        for attempt in range(1, attempts + 1):
            wait = s.backoff_s * 2 ** (attempt - 1)
            try:
                return parse(self._ask(prompt, seed)), None
            except _HTTPStatus as exc:
                error = f"attempt {attempt}/{attempts}: {exc}"
                if not exc.transient:
                    break
                if exc.retry_after_s is not None:  # the server says when it will have room
                    wait = min(exc.retry_after_s, s.max_retry_after_s)
            except (requests.RequestException, ValueError) as exc:
                error = f"attempt {attempt}/{attempts}: {type(exc).__name__}: {exc}"
            if attempt < attempts:
                self._sleep(wait)
        return None, self._redact(error)

    def _ask(self, prompt: str, seed: int) -> str:
        s = self.settings
        path, body = self.api.chat_request(s, prompt, seed)
        with self._session.post(
            s.url + path, json=body, headers=self._headers(), timeout=s.timeout_s, stream=s.stream
        ) as resp:
            if resp.status_code >= 400:
                wait = None
                if resp.status_code in (429, 503):
                    wait = retry_after_s(resp.headers.get("Retry-After"))
                raise _HTTPStatus(resp.status_code, resp.text, wait)
            try:
                text = self.api.reply_text(resp, s.stream)
            except (KeyError, IndexError, TypeError, AttributeError) as exc:
                raise BadReply(f"unexpected reply shape ({type(exc).__name__}: {exc})") from exc
        if not isinstance(text, str):
            raise BadReply(f"reply content is not text: {text!r}")
        return text

    def _headers(self) -> dict[str, str]:
        key = self.api.api_key(self.settings)
        return {"Authorization": f"Bearer {key}"} if key else {}

    def _redact(self, text: str) -> str:
        key = self.api.api_key(self.settings)
        return text.replace(key, "***") if key else text

    def _status_message(self, resp: requests.Response) -> str:
        s = self.settings
        message = f"the judge server at {s.url} answered {resp.status_code}: {resp.text[:300]}"
        if resp.status_code in (401, 403):
            return f"{message}; check the API key in the environment variable {s.api_key_env}"
        return message
