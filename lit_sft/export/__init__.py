"""A run as others use it: a folder serving tools load, GGUF for llama.cpp and Ollama, the Hub.

`python -m lit_sft.export <run folder or weights file> <out_dir>` writes, for any checkpoint
(model.safetensors, last.ckpt, best-step*.ckpt), the Hugging Face GPT-2 layout: model.safetensors
and config.json, generation_config.json, GPT-2's tokenizer files with the run's prompt style as a
chat template, and a model card (README.md), offline. A LoRA run's folder holds its weights with
the adapters merged; `--adapters-only` writes its adapters alone. `--gguf [--gguf-type
f32|f16|q8_0]` adds model-<type>.gguf and an Ollama Modelfile; `--push-to-hub OWNER/NAME
[--private]` uploads the folder (without <out_dir>: from a temporary one).
"""

from __future__ import annotations

from collections.abc import Sequence

from lit_sft.export.hf import export_for_serving

__all__ = ["export_for_serving", "main"]


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m lit_sft.export ...` (see the module's docstring)."""
    from lit_sft.export.command import main as run

    run(argv)
