"""Who may reach the server, and how large a request body may be."""

from __future__ import annotations

import ipaddress
import json
from typing import Any

from lit_sft.errors import InvalidInput

LOOPBACK_NAMES = ("localhost",)


def is_loopback(host: str) -> bool:
    """Whether `host` is reachable from this machine only (127.0.0.0/8, ::1, localhost)."""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve anywhere
        return False


def check_exposure(host: str, api_key: str | None) -> None:
    """Refuses to serve beyond loopback without an API key."""
    if api_key is None and not is_loopback(host):
        raise InvalidInput(
            f"host={host} would let other machines use the model without a key; "
            "pass api_key_env=<VARIABLE> (an environment variable holding the key) "
            "or serve on host=127.0.0.1"
        )


class BodyLimit:
    """ASGI middleware: a request body over `max_bytes` answers 413 before the app reads it."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client left before sending it all
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                await self._too_large(send)
                return
            more = message.get("more_body", False)
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if replayed:
                return await receive()  # later: the client's disconnect
            replayed = True
            return {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        await self.app(scope, replay, send)

    async def _too_large(self, send: Any) -> None:
        message = f"the request body is over this server's limit of {self.max_bytes} bytes"
        error = {"message": message, "type": "invalid_request_error", "param": None}
        body = json.dumps({"error": {**error, "code": "request_too_large"}}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})
