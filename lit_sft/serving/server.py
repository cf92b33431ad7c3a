"""`serve_model`: a model behind the OpenAI-compatible API on uvicorn, until interrupted."""

from __future__ import annotations

import uvicorn

from lit_sft.model import GPT
from lit_sft.prompts import PromptStyle
from lit_sft.serving.app import ServedModel, ServerSettings, create_app
from lit_sft.serving.engine import Engine
from lit_sft.serving.limits import check_exposure
from lit_sft.tokenizer import Tokenizer


def serve_model(
    model: GPT,
    style: PromptStyle,
    settings: ServerSettings,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    max_batch_size: int = 16,
    max_queue: int = 64,
    prepack_weights: bool = True,
) -> None:
    """Serves `model` on host:port until interrupted; beyond loopback only with an API key."""
    check_exposure(host, settings.api_key)
    engine = Engine(
        model,
        Tokenizer(),
        max_batch_size=max_batch_size,
        max_queue=max_queue,
        prepack_weights=prepack_weights,
    )
    app = create_app(ServedModel(engine, style), settings)
    uvicorn.run(app, host=host, port=port, log_level="info")
