"""Small random GPT-2 models on both sides (transformers and lit_sft) and checkpoints of them."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import GPT2Config, GPT2LMHeadModel

from lit_sft.model import GPTConfig

VOCAB, CONTEXT, EMB, LAYERS, HEADS = 512, 128, 64, 2, 4
TOLERANCE = 1e-4


def our_config(tie: bool = False, **overrides: int) -> GPTConfig:
    sizes = dict(vocab_size=VOCAB, context_length=CONTEXT, emb_dim=EMB, n_layers=LAYERS)
    sizes.update(n_heads=HEADS, **overrides)
    return GPTConfig(**sizes, tie_weights=tie)


def randomize(model: torch.nn.Module, seed: int) -> None:
    """Random values everywhere, so zero biases or unit LayerNorms cannot hide a wrong mapping."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.2)


def random_hf_model(tie: bool, n_embd: int = EMB, n_layer: int = LAYERS) -> GPT2LMHeadModel:
    config = GPT2Config(
        vocab_size=VOCAB,
        n_positions=CONTEXT,
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=HEADS,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        tie_word_embeddings=tie,
        bos_token_id=VOCAB - 1,
        eos_token_id=VOCAB - 1,
    )
    model = GPT2LMHeadModel(config)
    randomize(model, seed=1)
    return model.eval()


def save_hf_checkpoint(model: GPT2LMHeadModel, path: Path, *, prefix: str, head: bool) -> Path:
    """Saves `model` as the Hub's files look: optional `transformer.` prefix and lm_head."""
    tensors = {f"{prefix}{k}": v.clone() for k, v in model.transformer.state_dict().items()}
    if head:
        tensors["lm_head.weight"] = model.lm_head.weight.detach().clone()
    for i in range(model.config.n_layer):  # the mask buffers old checkpoints carry
        tensors[f"{prefix}h.{i}.attn.bias"] = torch.tril(torch.ones(1, 1, CONTEXT, CONTEXT))
        tensors[f"{prefix}h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    save_file(tensors, path)
    return path


def token_ids(batch: int = 2, length: int = 12) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(2))


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()
