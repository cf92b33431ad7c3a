"""The serving and chat tests' tiny GPT (GPT-2's vocabulary), and the overrides that name it."""

from __future__ import annotations

import torch

from lit_sft.model import GPT, GPTConfig

TINY = dict(vocab_size=50257, context_length=128, emb_dim=32, n_layers=2, n_heads=2)
# The same architecture as entry-script overrides (gpt2-tiny has GPT-2's vocabulary).
MODEL_ARGS = [
    "model=gpt2-tiny",
    "model.arch.context_length=128",
    "model.arch.emb_dim=32",
    "model.arch.n_layers=2",
    "model.arch.n_heads=2",
]


def tiny_model(seed: int = 0) -> GPT:
    """The tiny GPT with the weights of `seed`, in eval mode."""
    torch.manual_seed(seed)
    return GPT(GPTConfig(**TINY)).eval()
