"""Ollama's `/api/chat` (the book's judge server)."""

from __future__ import annotations

from typing import Any

import requests

from lit_sft.evaluation.judge.api import BadReply, JudgeSettings, json_lines


class OllamaAPI:
    """Ollama: `/api/chat` with options, newline-delimited JSON streams, `/api/tags`."""

    name = "ollama"
    models_path = "/api/tags"
    start_hint = "start it with `ollama serve`"

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
