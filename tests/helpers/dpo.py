"""A tiny GPT for the DPO tests, and one whose every position predicts the same logits."""

from __future__ import annotations

import torch

from lit_sft.model import GPT, GPTConfig

MODEL_CONFIG = {"vocab_size": 101, "context_length": 64, "emb_dim": 32, "n_layers": 2, "n_heads": 4}
CONFIG = GPTConfig(**MODEL_CONFIG)


def constant_logits_model(logits: list[float]) -> GPT:
    """A GPT whose every position predicts `logits` for tokens 0, 1, ... (the rest: -inf-ish)."""
    model = GPT(CONFIG)
    with torch.no_grad():
        # The final norm then outputs its bias whatever the input: (1, 0, ..., 0).
        model.final_norm.weight.zero_()
        model.final_norm.bias.zero_()
        model.final_norm.bias[0] = 1.0
        model.out_head.weight.zero_()
        model.out_head.weight[:, 0] = -1e4
        model.out_head.weight[: len(logits), 0] = torch.tensor(logits)
    return model
