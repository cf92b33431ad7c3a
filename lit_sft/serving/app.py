"""The OpenAI-compatible HTTP API of a served model, on FastAPI, and the chat page at `/`.

FastAPI + uvicorn rather than LitServe: LitServe batches requests that arrive within a time
window into one call of a user function and runs that function in worker processes, so a
streamed batch runs until its longest answer ends and the API shapes are LitServe's own; here
one engine thread (`lit_sft.serving.engine`) decodes all waiting requests through one KV cache,
drops each request the moment it ends or its client leaves, and FastAPI only speaks OpenAI's
API around it (a few small routes, server-sent events, OpenAI's error objects).
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib.resources import files
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ValidationError

from lit_sft.errors import InvalidInput
from lit_sft.prompts import PromptStyle
from lit_sft.serving.engine import Engine, Event, Finished, Job, Piece, QueueFull
from lit_sft.serving.limits import BodyLimit
from lit_sft.serving.protocol import (
    APIError,
    ChatRequest,
    CompletionRequest,
    GenerationRequest,
    completion_id,
    reply,
    usage,
    validation_error,
)
from lit_sft.serving.render import render_chat
from lit_sft.serving.sampling import SamplingParams


@dataclass(frozen=True)
class ServerSettings:
    """What the server is called and what it allows."""

    model_name: str
    api_key: str | None = None  # None: no key asked (loopback only, see `check_exposure`)
    max_tokens: int = 256  # the default and the most a request may ask
    max_request_bytes: int = 1 << 20


@dataclass
class ServedModel:
    """The engine decoding one model, and the prompt style its chats are rendered in."""

    engine: Engine
    style: PromptStyle


def create_app(served: ServedModel, settings: ServerSettings) -> FastAPI:
    """The FastAPI app; its lifespan starts the engine's thread and stops it."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        served.engine.start()
        yield
        served.engine.stop()

    app = FastAPI(title="lit_sft", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.add_middleware(BodyLimit, max_bytes=settings.max_request_bytes)
    api = _API(served, settings)

    @app.exception_handler(APIError)
    async def api_error(request: Request, error: APIError) -> JSONResponse:
        return JSONResponse(error.body, status_code=error.status, headers=error.headers)

    @app.get("/", response_class=HTMLResponse)
    async def page() -> str:
        return (files("lit_sft.serving") / "static" / "index.html").read_text(encoding="utf-8")

    @app.get("/health")
    async def health() -> dict[str, Any]:
        engine = served.engine
        return {
            "status": "ok",
            "model": settings.model_name,
            "waiting": len(engine.waiting),
            "running": engine.running,
            "max_batch_size": engine.max_batch_size,
            "max_queue": engine.max_queue,
        }

    @app.get("/v1/models")
    async def models(request: Request) -> dict[str, Any]:
        api.check_key(request)
        entry = {"id": settings.model_name, "object": "model", "created": 0, "owned_by": "lit_sft"}
        return {"object": "list", "data": [entry]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        body = await api.parse(request, ChatRequest)
        try:
            prompt = render_chat(served.style, body.messages)
        except InvalidInput as error:
            raise APIError(400, str(error), param="messages", code="invalid_value") from None
        tokens = served.engine.tokenizer.encode(prompt)
        return await api.complete(body, tokens, body.max_completion_tokens or body.max_tokens, True)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        body = await api.parse(request, CompletionRequest)
        prompt = body.prompt
        tokens = served.engine.tokenizer.encode(prompt) if isinstance(prompt, str) else prompt
        vocab = served.engine.model.config.vocab_size
        if not tokens or any(not 0 <= t < vocab for t in tokens):
            raise APIError(
                400, f"prompt: empty, or token ids outside 0..{vocab - 1}", param="prompt"
            )
        return await api.complete(body, list(tokens), body.max_tokens, False)

    return app


class _API:
    """The request handling both completion endpoints share."""

    def __init__(self, served: ServedModel, settings: ServerSettings) -> None:
        self.engine = served.engine
        self.settings = settings

    def check_key(self, request: Request) -> None:
        """A 401 unless the request carries `Authorization: Bearer <key>` (when a key is set)."""
        key = self.settings.api_key
        if key is None:
            return
        given = request.headers.get("authorization", "")
        if not secrets.compare_digest(given.encode(), f"Bearer {key}".encode()):
            what = "Incorrect API key provided" if given else "Missing API key"
            message = f"{what}: send the server's key as 'Authorization: Bearer <key>'"
            raise APIError(401, message, code="invalid_api_key")

    async def parse(self, request: Request, kind: type[BaseModel]) -> Any:
        """The checked request body, after the key and the model name."""
        self.check_key(request)
        try:
            body = kind.model_validate(json.loads(await request.body()))
        except json.JSONDecodeError as error:
            raise APIError(400, f"the request body is not JSON: {error}") from None
        except ValidationError as error:
            raise validation_error(error.errors(include_url=False)) from None
        if body.model != self.settings.model_name:
            message = f"The model '{body.model}' does not exist; this server serves " + repr(
                self.settings.model_name
            )
            raise APIError(404, message, param="model", code="model_not_found")
        return body

    def budget(self, asked: int | None, prompt_tokens: int) -> int:
        """max_tokens of a request: as asked, else the server's default cut to the context."""
        context, limit = self.engine.context, self.settings.max_tokens
        if prompt_tokens >= context or (asked is not None and prompt_tokens + asked > context):
            message = (
                f"This model's maximum context length is {context} tokens; the prompt has "
                f"{prompt_tokens} tokens and {asked or 1} more were asked: shorten the prompt"
            )
            raise APIError(400, message, param="messages", code="context_length_exceeded")
        if asked is not None and asked > limit:
            message = f"max_tokens is {asked}; this server allows at most {limit}"
            raise APIError(400, message, param="max_tokens", code="invalid_value")
        return min(asked or limit, context - prompt_tokens)

    async def complete(
        self, body: GenerationRequest, prompt: list[int], asked: int | None, chat: bool
    ) -> Response:
        """Queues the request; its reply, or a stream of server-sent events."""
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[Event] = asyncio.Queue()
        sampling = SamplingParams(body.temperature, body.top_k, body.top_p, body.seed)
        job = Job(
            prompt,
            self.budget(asked, len(prompt)),
            sampling,
            lambda event: loop.call_soon_threadsafe(events.put_nowait, event),
            stop=tuple(body.stop or ()),
        )
        try:
            self.engine.submit(job)
        except QueueFull:
            message = f"the server has {self.engine.max_queue} requests waiting; retry shortly"
            headers = {"Retry-After": "1"}
            raise APIError(
                429, message, type="rate_limit_error", code="queue_full", headers=headers
            ) from None
        shape = _Shape(chat, completion_id("chatcmpl" if chat else "cmpl"), body.model, len(prompt))
        if body.stream:
            stream = _stream(events, job, shape, body.include_usage)
            return StreamingResponse(stream, media_type="text/event-stream")
        return JSONResponse(await _collect(events, job, shape))


@dataclass(frozen=True)
class _Shape:
    """How one request's replies look: chat or text completion, its id, model, prompt length."""

    chat: bool
    reply_id: str
    model: str
    prompt_tokens: int

    def choice(self, text: str | None, finish: str | None, delta: bool) -> dict[str, Any]:
        if not self.chat:
            return {"text": text or "", "logprobs": None, "finish_reason": finish}
        if delta:
            return {"delta": {} if text is None else {"content": text}, "finish_reason": finish}
        message = {"role": "assistant", "content": text}
        return {"message": message, "logprobs": None, "finish_reason": finish}

    def kind(self, chunk: bool) -> str:
        return ("chat.completion" if self.chat else "text_completion") + (
            ".chunk" if chunk and self.chat else ""
        )


async def _collect(events: asyncio.Queue[Event], job: Job, shape: _Shape) -> dict[str, Any]:
    """The whole answer as one reply; an abandoned request is cancelled."""
    pieces: list[str] = []
    try:
        while isinstance(event := await events.get(), Piece):
            pieces.append(event.text)
    finally:
        job.cancelled.set()  # no-op once the job has finished
    _raise_if_failed(event)
    choice = shape.choice("".join(pieces), event.reason, delta=False)
    use = usage(shape.prompt_tokens, event.completion_tokens)
    return reply(shape.kind(False), shape.reply_id, shape.model, choice, usage=use)


async def _stream(
    events: asyncio.Queue[Event], job: Job, shape: _Shape, include_usage: bool
) -> AsyncIterator[str]:
    """The answer as server-sent events; a client that leaves cancels its job."""
    kind = shape.kind(True)
    try:
        if shape.chat:
            first = {"delta": {"role": "assistant", "content": ""}, "finish_reason": None}
            yield _sse(reply(kind, shape.reply_id, shape.model, first))
        while isinstance(event := await events.get(), Piece):
            yield _sse(
                reply(kind, shape.reply_id, shape.model, shape.choice(event.text, None, True))
            )
        if event.reason == "error":
            yield _sse(APIError(500, f"generation failed: {event.error}", type="server_error").body)
        else:
            last = shape.choice(None, event.reason, delta=True)
            yield _sse(reply(kind, shape.reply_id, shape.model, last))
            if include_usage:
                use = usage(shape.prompt_tokens, event.completion_tokens)
                yield _sse(reply(kind, shape.reply_id, shape.model, {}, usage=use))
        yield "data: [DONE]\n\n"
    finally:
        job.cancelled.set()


def _sse(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data)}\n\n"


def _raise_if_failed(event: Finished) -> None:
    if event.reason == "error":
        raise APIError(500, f"generation failed: {event.error}", type="server_error")
