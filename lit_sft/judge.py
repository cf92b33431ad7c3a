"""Score model responses 0-100 with a judge LLM served by Ollama or an OpenAI-compatible server."""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

import requests
from tqdm import tqdm

APIS = ("ollama", "openai")

# The prompt may mention the scale ("On a scale from 0 to 100, I'd give 85"); drop such ranges so
# the first number left is the score.
_SCALE = re.compile(r"\b0\s*(?:-|–|to)\s*100\b", re.IGNORECASE)
# A sign or decimal part is captured so "-3" and "8.5" are rejected instead of read as 3 and 8.
_NUMBER = re.compile(r"(?<![\w.])-?[0-9]+(?:\.[0-9]+)?")


@dataclass(frozen=True)
class JudgeResult:
    """The mean score of one entry (None on failure), the integer of each sample, and the error."""

    score: float | None
    samples: list[int]
    error: str | None = None


class JudgeUnavailable(RuntimeError):
    """The judge server cannot be reached or does not serve the judge model."""


class _BadReply(ValueError):
    """A reply that is not the shape the API promises (worth retrying)."""


class _HTTPStatus(Exception):
    """A reply with an HTTP error status."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status}: {body[:300]}")
        self.status = status

    @property
    def transient(self) -> bool:
        return self.status >= 500 or self.status in (408, 429)


def judge_prompt(instruction: str, reference: str, response: str) -> str:
    """The request sent to the judge for one entry."""
    return (
        "You are grading how well a model followed an instruction.\n\n"
        f"Instruction and input:\n{instruction}\n\n"
        f"Correct output:\n{reference}\n\n"
        f"Model response:\n{response}\n\n"
        "Rate the model response on a scale from 0 to 100, where 100 means it is as good as the "
        "correct output. Reply with the integer only."
    )


def parse_score(text: str) -> int:
    """The first integer in the judge's reply; ValueError if there is none or it is not in 0-100."""
    match = _NUMBER.search(_SCALE.sub(" ", text))
    if match is None:
        raise ValueError(f"no score in judge reply {text!r}")
    number = match.group()
    if "." in number:
        raise ValueError(f"score {number} is not an integer in judge reply {text!r}")
    score = int(number)
    if not 0 <= score <= 100:
        raise ValueError(f"score {score} is outside 0-100 in judge reply {text!r}")
    return score


def _ollama_names_match(wanted: str, listed: str) -> bool:
    # Ollama lists "llama3:latest" for a model pulled as "llama3".
    def with_tag(name: str) -> str:
        return name if ":" in name else f"{name}:latest"

    return with_tag(wanted) == with_tag(listed)


def _json_lines(resp: requests.Response) -> Iterator[dict[str, Any]]:
    for line in resp.iter_lines():
        if line:
            yield json.loads(line)


def _ollama_stream_text(resp: requests.Response) -> str:
    pieces = []
    for chunk in _json_lines(resp):
        if "error" in chunk:
            raise _BadReply(f"error in stream: {chunk['error']}")
        pieces.append(chunk.get("message", {}).get("content", ""))
        if chunk.get("done"):
            return "".join(pieces)
    raise _BadReply(f"stream ended before done after {''.join(pieces)!r}")


def _openai_stream_text(resp: requests.Response) -> str:
    pieces = []
    for line in resp.iter_lines():
        if not line.startswith(b"data:"):
            continue
        data = line[len(b"data:") :].strip()
        if data == b"[DONE]":
            return "".join(pieces)
        choices = json.loads(data).get("choices") or [{}]
        pieces.append(choices[0].get("delta", {}).get("content") or "")
    raise _BadReply(f"stream ended before [DONE] after {''.join(pieces)!r}")


def _read_text(resp: requests.Response, api: str, stream: bool) -> str:
    if stream:
        return _ollama_stream_text(resp) if api == "ollama" else _openai_stream_text(resp)
    body = resp.json()
    if api == "ollama":
        return body["message"]["content"]
    return body["choices"][0]["message"]["content"]


def _reply_text(resp: requests.Response, api: str, stream: bool) -> str:
    if resp.status_code >= 400:
        raise _HTTPStatus(resp.status_code, resp.text)
    try:
        text = _read_text(resp, api, stream)
    except (KeyError, IndexError, TypeError, AttributeError) as exc:
        raise _BadReply(f"unexpected reply shape ({type(exc).__name__}: {exc})") from exc
    if not isinstance(text, str):
        raise _BadReply(f"reply content is not text: {text!r}")
    return text


class Judge:
    """A judge LLM behind Ollama's `/api/chat` or an OpenAI-compatible `/v1/chat/completions`."""

    def __init__(
        self,
        url: str = "http://localhost:11434",
        model: str = "llama3",
        api: str = "ollama",
        timeout_s: float = 120.0,
        max_attempts: int = 4,
        backoff_s: float = 1.0,
        samples: int = 1,
        seed: int = 123,
        temperature: float = 0.0,
        num_ctx: int = 2048,
        stream: bool = True,
        api_key_env: str = "OPENAI_API_KEY",
        *,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if api not in APIS:
            raise ValueError(f"unknown judge api {api!r}; choose one of {', '.join(APIS)}")
        if max_attempts < 1 or samples < 1:
            raise ValueError(f"max_attempts ({max_attempts}) and samples ({samples}) must be >= 1")
        self.url = url.rstrip("/")
        self.model = model
        self.api = api
        self.timeout_s = timeout_s
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self.samples = samples
        self.seed = seed
        self.temperature = temperature
        self.num_ctx = num_ctx
        self.stream = stream
        # Only the variable's name is kept; the key is read at each request so that it never sits
        # in this object, its repr, a config or a log.
        self.api_key_env = api_key_env
        self._sleep = sleep
        self._session = requests.Session()

    def __repr__(self) -> str:
        return (
            f"Judge(url={self.url!r}, model={self.model!r}, api={self.api!r}, "
            f"samples={self.samples}, api_key_env={self.api_key_env!r})"
        )

    def __enter__(self) -> Judge:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the HTTP connections."""
        self._session.close()

    def check_ready(self) -> None:
        """Raise JudgeUnavailable unless the server answers and serves the judge model."""
        url = self.url + ("/api/tags" if self.api == "ollama" else "/v1/models")
        try:
            resp = self._session.get(url, headers=self._headers(), timeout=self.timeout_s)
        except requests.RequestException as exc:
            hint = "start it with `ollama serve`" if self.api == "ollama" else "is it running?"
            message = f"cannot reach the {self.api} judge server at {self.url} ({exc}); {hint}"
            raise JudgeUnavailable(self._redact(message)) from None
        if resp.status_code >= 400:
            raise JudgeUnavailable(self._redact(self._status_message(resp)))
        names = self._served_models(resp)
        if not any(self._model_matches(name) for name in names):
            raise JudgeUnavailable(self._missing_model_message(names))

    def score(self, instruction: str, reference: str, response: str) -> JudgeResult:
        """Score one response; failures come back as a result with score None and the error."""
        prompt = judge_prompt(instruction, reference, response)
        samples: list[int] = []
        for i in range(self.samples):
            score, error = self._sample(prompt, self.seed + i)
            if score is None:
                return JudgeResult(score=None, samples=samples, error=error)
            samples.append(score)
        return JudgeResult(score=sum(samples) / len(samples), samples=samples, error=None)

    def _sample(self, prompt: str, seed: int) -> tuple[int | None, str | None]:
        """One score with retries, or None and the last error once the attempts are spent."""
        error = ""
        for attempt in range(1, self.max_attempts + 1):
            try:
                return parse_score(self._ask(prompt, seed)), None
            except _HTTPStatus as exc:
                error = f"attempt {attempt}/{self.max_attempts}: {exc}"
                if not exc.transient:
                    break
            except (requests.RequestException, ValueError) as exc:
                error = f"attempt {attempt}/{self.max_attempts}: {type(exc).__name__}: {exc}"
            if attempt < self.max_attempts:
                self._sleep(self.backoff_s * 2 ** (attempt - 1))
        return None, self._redact(error)

    def _ask(self, prompt: str, seed: int) -> str:
        path, body = self._request(prompt, seed)
        with self._session.post(
            self.url + path,
            json=body,
            headers=self._headers(),
            timeout=self.timeout_s,
            stream=self.stream,
        ) as resp:
            return _reply_text(resp, self.api, self.stream)

    def _request(self, prompt: str, seed: int) -> tuple[str, dict[str, Any]]:
        messages = [{"role": "user", "content": prompt}]
        body: dict[str, Any] = {"model": self.model, "messages": messages, "stream": self.stream}
        if self.api == "ollama":
            options = {"seed": seed, "temperature": self.temperature, "num_ctx": self.num_ctx}
            return "/api/chat", body | {"options": options}
        return "/v1/chat/completions", body | {"seed": seed, "temperature": self.temperature}

    def _api_key(self) -> str | None:
        if self.api != "openai":
            return None
        return os.environ.get(self.api_key_env) or None

    def _headers(self) -> dict[str, str]:
        key = self._api_key()
        return {"Authorization": f"Bearer {key}"} if key else {}

    def _redact(self, text: str) -> str:
        key = self._api_key()
        return text.replace(key, "***") if key else text

    def _served_models(self, resp: requests.Response) -> list[str]:
        try:
            body = resp.json()
            if self.api == "ollama":
                return [m.get("name") or m.get("model") for m in body["models"]]
            return [m["id"] for m in body["data"]]
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise JudgeUnavailable(
                f"the server at {self.url} does not answer like {self.api}: {resp.text[:300]!r}"
            ) from exc

    def _model_matches(self, name: str) -> bool:
        if self.api == "ollama":
            return _ollama_names_match(self.model, name)
        return self.model == name

    def _missing_model_message(self, names: list[str]) -> str:
        served = ", ".join(names) if names else "no models"
        message = f"judge model {self.model!r} is not on the {self.api} server at {self.url}"
        if self.api == "ollama":
            return f"{message} (it has: {served}); run `ollama pull {self.model}`"
        return f"{message} (it serves: {served})"

    def _status_message(self, resp: requests.Response) -> str:
        message = f"the judge server at {self.url} answered {resp.status_code}: {resp.text[:300]}"
        if resp.status_code in (401, 403):
            return f"{message}; check the API key in the environment variable {self.api_key_env}"
        return message


def read_scores(scores_path: Path) -> dict[int, JudgeResult]:
    """The results recorded in a scores file; later lines win and unreadable lines are skipped."""
    results: dict[int, JudgeResult] = {}
    if not scores_path.exists():
        return results
    for line in scores_path.read_text(encoding="utf-8").splitlines():
        # A run killed mid-write leaves a partial line; that entry is simply scored again.
        try:
            record = json.loads(line)
            result = JudgeResult(record["score"], list(record["samples"]), record["error"])
            results[int(record["index"])] = result
        except (ValueError, KeyError, TypeError):
            continue
    return results


def _open_for_append(path: Path) -> IO[str]:
    path.parent.mkdir(parents=True, exist_ok=True)
    ends_mid_line = False
    if path.exists() and path.stat().st_size:
        with path.open("rb") as f:
            f.seek(-1, os.SEEK_END)
            ends_mid_line = f.read(1) != b"\n"
    f = path.open("a", encoding="utf-8")
    if ends_mid_line:
        # Without this the next record would be glued onto the partial line and lost on resume.
        f.write("\n")
    return f


def _append(f: IO[str], index: int, result: JudgeResult) -> None:
    record = {"index": index} | asdict(result)
    f.write(json.dumps(record) + "\n")
    f.flush()
    os.fsync(f.fileno())


def score_entries(
    entries: list[dict[str, Any]], judge: Judge, scores_path: Path, *, progress: bool = True
) -> dict[int, JudgeResult]:
    """Score every entry not yet scored in `scores_path`, appending one JSON line per entry."""
    results = read_scores(scores_path)
    todo = [i for i in range(len(entries)) if i not in results or results[i].score is None]
    if todo:
        judge.check_ready()
        failed = 0
        with (
            _open_for_append(scores_path) as f,
            tqdm(
                total=len(entries),
                initial=len(entries) - len(todo),
                desc="judging",
                unit="entry",
                disable=not progress,
            ) as bar,
        ):
            for i in todo:
                entry = entries[i]
                result = judge.score(
                    entry["instruction_text"], entry["output"], entry["model_response"]
                )
                _append(f, i, result)
                results[i] = result
                failed += result.score is None
                bar.set_postfix(failed=failed)
                bar.update()
    return {i: results[i] for i in range(len(entries))}
