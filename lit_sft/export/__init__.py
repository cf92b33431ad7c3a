"""A run as others use it: a folder serving tools load, GGUF for llama.cpp and Ollama, the Hub.

`export_for_serving` writes the Hugging Face folder; `python -m lit_sft.export` (the command, in
`lit_sft.export.command`) exports any checkpoint of a run, with a model card, GGUF and an upload."""

from __future__ import annotations

from collections.abc import Sequence

from lit_sft.export.hf import export_for_serving

__all__ = ["export_for_serving", "main"]


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m lit_sft.export ...` (see the module's docstring)."""
    from lit_sft.export.command import main as run

    run(argv)
