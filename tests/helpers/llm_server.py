"""A scriptable stand-in for Ollama and OpenAI-compatible chat servers, on 127.0.0.1."""

from __future__ import annotations

import contextlib
import json
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

CHAT_PATHS = ("/api/chat", "/v1/chat/completions")


@dataclass(frozen=True)
class Reply:
    """How the server answers one chat request."""

    text: str = "85"
    status: int = 200
    delay_s: float = 0.0  # sleep before answering, to outlast a client timeout
    raw: bytes | None = None  # send these bytes as the whole body instead of a well-formed reply
    cut_stream: bool = False  # end a streamed reply before its final chunk
    echo_headers: bool = False  # put the request headers in the body, as a careless server might
    headers: dict[str, str] = field(default_factory=dict)  # extra headers, e.g. Retry-After


@dataclass(frozen=True)
class Recorded:
    """One request the server received."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class FakeLLMServer:
    """Serves `/api/chat`, `/api/tags`, `/v1/chat/completions` and `/v1/models` from a script."""

    models: list[str] = field(default_factory=lambda: ["llama3:latest"])
    api_key: str | None = None  # when set, the OpenAI endpoints demand `Bearer <api_key>`
    default_reply: Reply = field(default_factory=Reply)
    stop_after_chats: int | None = None  # go away for good once this many chats are answered
    # The reply to a chat body when none is queued (a reply that depends on the question).
    reply_for: Callable[[Any], Reply] | None = None
    # The same per served model ("llama3", "qwen2"): several judges behind one server.
    reply_by_model: dict[str, Callable[[Any], Reply]] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)
    max_in_flight: int = 0  # the most chats answered at once
    # How `/api/tags` and `/v1/models` answer instead of listing `models`: its status (with
    # `{"error": text}`), its raw body, its delay.
    models_reply: Reply | None = None

    def __post_init__(self) -> None:
        self._queue: deque[Reply] = deque()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._gone = threading.Event()
        self._in_flight = 0
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._httpd is not None, "server not started"
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def chats(self) -> list[Recorded]:
        with self._lock:
            return [r for r in self.requests if r.path in CHAT_PATHS]

    def reply_with(self, *replies: Reply | str) -> None:
        """Queue replies for the next chat requests; strings are reply texts."""
        with self._lock:
            self._queue.extend(Reply(text=r) if isinstance(r, str) else r for r in replies)

    def start(self) -> None:
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.fake = self
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._gone.set()
        self._stopping.set()
        if self._httpd is not None and self._thread is not None and self._thread.is_alive():
            self._httpd.shutdown()
        if self._httpd is not None:
            self._httpd.server_close()

    def _record(self, request: Recorded) -> Reply:
        """Log a request and pick the reply to a chat."""
        with self._lock:
            self.requests.append(request)
            reply = self.default_reply
            model = request.body.get("model") if isinstance(request.body, dict) else None
            if request.path in CHAT_PATHS and self._queue:
                reply = self._queue.popleft()
            elif request.path in CHAT_PATHS and model in self.reply_by_model:
                reply = self.reply_by_model[model](request.body)
            elif request.path in CHAT_PATHS and self.reply_for is not None:
                reply = self.reply_for(request.body)
            n_chats = sum(r.path in CHAT_PATHS for r in self.requests)
            if self.stop_after_chats is not None and n_chats >= self.stop_after_chats:
                # Refuse anything that arrives before the listening socket is closed.
                self._gone.set()
        return reply

    @property
    def gone(self) -> bool:
        return self._gone.is_set()


class _Server(ThreadingHTTPServer):
    # The handler that takes the server down runs in one of the server's threads, which a
    # blocking close would try to join.
    block_on_close = False
    fake: FakeLLMServer


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._handle(body=None)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        self._handle(body=json.loads(self.rfile.read(length) or b"null"))

    def _handle(self, body: Any) -> None:
        fake = self.server.fake
        if fake.gone:
            return  # drop the connection without a word, like a server that has died
        path = self.path.split("?")[0]
        reply = fake._record(Recorded(self.command, path, dict(self.headers), body))
        with fake._lock:
            fake._in_flight += 1
            fake.max_in_flight = max(fake.max_in_flight, fake._in_flight)
        # The client may have given up waiting (a timeout test) and closed the connection.
        try:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self._answer(path, body, reply)
        finally:
            with fake._lock:
                fake._in_flight -= 1
        if fake.gone:
            fake.stop()

    def _answer(self, path: str, body: Any, reply: Reply) -> None:
        fake = self.server.fake
        if path.startswith("/v1/") and fake.api_key is not None:
            sent = self.headers.get("Authorization", "")
            if sent != f"Bearer {fake.api_key}":
                return self._send_json(401, {"error": {"message": f"bad key in {sent!r}"}})
        if path in ("/api/tags", "/v1/models") and fake.models_reply is not None:
            return self._answer_models(fake.models_reply)
        if path == "/api/tags":
            return self._send_json(200, {"models": [{"name": m, "model": m} for m in fake.models]})
        if path == "/v1/models":
            return self._send_json(
                200, {"object": "list", "data": [{"id": m} for m in fake.models]}
            )
        if path not in CHAT_PATHS:
            return self._send_json(404, {"error": f"no route {path}"})
        if reply.delay_s and fake._stopping.wait(reply.delay_s):
            return
        if reply.status >= 400 or reply.echo_headers:
            error = dict(self.headers) if reply.echo_headers else reply.text
            return self._send_json(reply.status, {"error": error}, reply.headers)
        if reply.raw is not None:
            return self._send(200, "application/json", [reply.raw])
        if body.get("stream", path == "/api/chat"):
            return self._send_stream(path, reply)
        return self._send_json(200, _message(path, reply.text))

    def _answer_models(self, reply: Reply) -> None:
        if reply.delay_s and self.server.fake._stopping.wait(reply.delay_s):
            return
        if reply.status >= 400:
            return self._send_json(reply.status, {"error": reply.text})
        return self._send(200, "application/json", [reply.raw or b""])

    def _send_stream(self, path: str, reply: Reply) -> None:
        # One character per chunk, so a client that keeps only one chunk gets the score wrong.
        if path == "/api/chat":
            chunks = [
                {"message": {"role": "assistant", "content": c}, "done": False} for c in reply.text
            ]
            final = [{"message": {"role": "assistant", "content": ""}, "done": True}]
            lines = [json.dumps(c).encode() + b"\n" for c in chunks + final]
            content_type = "application/x-ndjson"
        else:
            deltas = [{"choices": [{"index": 0, "delta": {"content": c}}]} for c in reply.text]
            lines = [b"data: " + json.dumps(d).encode() + b"\n\n" for d in deltas]
            lines.append(b"data: [DONE]\n\n")
            content_type = "text/event-stream"
        self._send(200, content_type, lines[:-1] if reply.cut_stream else lines)

    def _send_json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, "application/json", [json.dumps(obj).encode()], headers)

    def _send(
        self,
        status: int,
        content_type: str,
        parts: list[bytes],
        headers: dict[str, str] | None = None,
    ) -> None:
        # HTTP/1.0 without Content-Length: the body ends when the connection closes, which lets a
        # streamed reply go out chunk by chunk.
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        for part in parts:
            self.wfile.write(part)
            self.wfile.flush()


def rubric_reply(grade: int | str, reasoning: str = "") -> str:
    """A reply to the rubric prompt as a chat model writes one: reasoning, then the grade."""
    reasoning = reasoning or (
        "The response addresses the instruction and matches the key points of the correct "
        "output, though it is less precise in places."
    )
    return f"{reasoning}\n\nGrade: {grade}"


def _message(path: str, text: str) -> dict[str, Any]:
    if path == "/api/chat":
        return {"model": "fake", "message": {"role": "assistant", "content": text}, "done": True}
    choice = {
        "index": 0,
        "message": {"role": "assistant", "content": text},
        "finish_reason": "stop",
    }
    return {"object": "chat.completion", "choices": [choice]}
