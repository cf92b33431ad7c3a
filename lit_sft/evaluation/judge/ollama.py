"""Ollama's `/api/chat` (the book's judge server)."""

from __future__ import annotations

import os
from typing import Any

import requests

from lit_sft.evaluation.judge.api import BadReply, JudgeSettings, json_lines


def ollama_host_url(host: str) -> str:
    """The URL that an OLLAMA_HOST value means, read as Ollama reads it.

    `host[:port]`, `:port`, `scheme://host[:port][/path]` or nothing; the port defaults to
    11434 without a scheme, to the scheme's port with one.
    """
    scheme, has_scheme, rest = host.strip().partition("://")
    if not has_scheme:
        scheme, rest = "http", host.strip()
    hostport, slash, path = rest.partition("/")
    name, colon, port = hostport.rpartition(":")
    if not colon:
        name, port = hostport, ""
    default_port = {"http": "80", "https": "443"}.get(scheme, "") if has_scheme else "11434"
    url = f"{scheme}://{name or '127.0.0.1'}:{port or default_port}"
    return f"{url}/{path}".rstrip("/") if slash else url


class OllamaAPI:
    """Ollama: `/api/chat` with options, newline-delimited JSON streams, `/api/tags`."""

    name = "ollama"
    models_path = "/api/tags"
    start_hint = "start it with `ollama serve`"

    def base_url(self, url: str | None) -> str:
        return ollama_host_url(url if url is not None else os.environ.get("OLLAMA_HOST", ""))

    def chat_request(
        self, settings: JudgeSettings, prompt: str, seed: int
    ) -> tuple[str, dict[str, Any]]:
        options = {"seed": seed, "temperature": settings.temperature, "num_ctx": settings.num_ctx}
        body = {
            "model": settings.model,
            "messages": [{"role": "user", "content": prompt}],
            "stream": settings.stream,
            "options": options,
        }
        return "/api/chat", body

    def reply_text(self, resp: requests.Response, stream: bool) -> str:
        if not stream:
            return resp.json()["message"]["content"]
        pieces = []
        for chunk in json_lines(resp):
            if "error" in chunk:
                raise BadReply(f"error in stream: {chunk['error']}")
            pieces.append(chunk.get("message", {}).get("content", ""))
            if chunk.get("done"):
                return "".join(pieces)
        raise BadReply(f"stream ended before done after {''.join(pieces)!r}")

    def served_models(self, body: Any) -> list[str]:
        return [m.get("name") or m.get("model") for m in body["models"]]

    def model_matches(self, wanted: str, listed: str) -> bool:
        # Ollama lists "llama3:latest" for a model pulled as "llama3".
        def with_tag(name: str) -> str:
            return name if ":" in name else f"{name}:latest"

        return with_tag(wanted) == with_tag(listed)

    def missing_model_hint(self, model: str) -> str:
        return f"run `ollama pull {model}`"

    def api_key(self, settings: JudgeSettings) -> str | None:
        return None
