"""The OpenAI API's request bodies, error objects and reply shapes, as this server speaks them.

Fields of OpenAI's API the model cannot honour (`n` > 1, logprobs, penalties) are refused or
ignored as noted; `top_k` is vLLM's extension.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_STOP_STRINGS = 4


class APIError(Exception):
    """A request the server refuses, as an OpenAI-style error object with an HTTP status."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = {"error": {"message": message, "type": type, "param": param, "code": code}}
        self.headers = headers or {}


class GenerationRequest(BaseModel):
    """What both completion endpoints share: the model, the sampling settings, streaming."""

    model_config = ConfigDict(extra="ignore")

    model: str
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(0.0, ge=0.0, le=2.0)  # 0: greedy, as generation_config.json says
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    top_k: int | None = Field(None, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int = Field(1, ge=1, le=1)
    stream: bool = False
    stream_options: dict[str, Any] | None = None

    @field_validator("stop")
    @classmethod
    def _stop_strings(cls, stop: str | list[str] | None) -> list[str]:
        stops = [stop] if isinstance(stop, str) else list(stop or [])
        if len(stops) > MAX_STOP_STRINGS or any(not s for s in stops):
            raise ValueError(f"stop takes up to {MAX_STOP_STRINGS} non-empty strings")
        return stops

    @property
    def include_usage(self) -> bool:
        """Whether a stream ends with a usage chunk (`stream_options.include_usage`)."""
        return bool((self.stream_options or {}).get("include_usage"))


class ChatRequest(GenerationRequest):
    """`POST /v1/chat/completions`; `max_completion_tokens` is the newer name of max_tokens."""

    messages: list[dict[str, Any]] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)


class CompletionRequest(GenerationRequest):
    """`POST /v1/completions`: a prompt as text, or as token ids."""

    prompt: str | list[int] | list[str]

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, prompt: str | list[int] | list[str]) -> str | list[int]:
        if isinstance(prompt, list) and prompt and isinstance(prompt[0], str):
            if len(prompt) != 1:
                raise ValueError("one prompt per request (n and batches of prompts are not served)")
            return prompt[0]
        return prompt


def validation_error(errors: list[dict[str, Any]]) -> APIError:
    """A 400 error object for pydantic's first complaint about a request body."""
    first = errors[0] if errors else {"loc": (), "msg": "invalid request body"}
    param = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or None
    message = f"{param}: {first['msg']}" if param else str(first["msg"])
    return APIError(400, message, param=param, code="invalid_value")


def completion_id(prefix: str) -> str:
    """A fresh id for a reply, as `chatcmpl-...` / `cmpl-...`."""
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    """The `usage` object of a reply."""
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def reply(kind: str, reply_id: str, model: str, choice: dict[str, Any], **extra: Any) -> dict:
    """A reply or stream chunk: `chat.completion[.chunk]` or `text_completion` with one choice."""
    return {
        "id": reply_id,
        "object": kind,
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, **choice}] if choice else [],
        **extra,
    }
