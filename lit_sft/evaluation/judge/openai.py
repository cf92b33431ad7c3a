"""OpenAI-compatible `/v1/chat/completions` (vLLM, llama.cpp, LM Studio, hosted APIs)."""

from __future__ import annotations

import json
import os
from typing import Any

import requests

from lit_sft.evaluation.judge.api import BadReply, JudgeSettings


class OpenAIAPI:
    """OpenAI-compatible servers: bearer key, server-sent-event streams, `/v1/models`."""

    name = "openai"
    models_path = "/v1/models"
    start_hint = "is it running?"
    default_url = "http://localhost:8000"  # vLLM's

    def base_url(self, url: str | None) -> str:
        # OpenAI's clients take the base with /v1 (OPENAI_BASE_URL=https://api.openai.com/v1);
        # this adapter's paths start with /v1, so either spelling works.
        url = url or os.environ.get("OPENAI_BASE_URL") or self.default_url
        return url.rstrip("/").removesuffix("/v1")

    def chat_request(
        self, settings: JudgeSettings, prompt: str, seed: int
    ) -> tuple[str, dict[str, Any]]:
        body = {
            "model": settings.model,
            "messages": [{"role": "user", "content": prompt}],
            "stream": settings.stream,
            "seed": seed,
            "temperature": settings.temperature,
        }
        return "/v1/chat/completions", body

    def reply_text(self, resp: requests.Response, stream: bool) -> str:
        if not stream:
            return resp.json()["choices"][0]["message"]["content"]
        pieces = []
        for line in resp.iter_lines():
            if not line.startswith(b"data:"):
                continue
            data = line[len(b"data:") :].strip()
            if data == b"[DONE]":
                return "".join(pieces)
            choices = json.loads(data).get("choices") or [{}]
            pieces.append(choices[0].get("delta", {}).get("content") or "")
        raise BadReply(f"stream ended before [DONE] after {''.join(pieces)!r}")

    def served_models(self, body: Any) -> list[str]:
        return [m["id"] for m in body["data"]]

    def model_matches(self, wanted: str, listed: str) -> bool:
        return wanted == listed

    def missing_model_hint(self, model: str) -> str:
        return "set judge.model to one of them"

    def api_key(self, settings: JudgeSettings) -> str | None:
        return os.environ.get(settings.api_key_env) or None
