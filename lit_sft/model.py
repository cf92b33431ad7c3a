"""GPT-2 in PyTorch: config -> attention -> MLP -> block -> model, and a key/value cache."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from lit_sft.errors import InvalidInput


@dataclass(frozen=True)
class GPTConfig:
    """Architecture of a GPT-2 model; the sizes live in `conf/model/*.yaml`."""

    vocab_size: int = 50257
    context_length: int = 1024
    emb_dim: int = 768
    n_layers: int = 12
    n_heads: int = 12
    drop_rate: float = 0.0
    qkv_bias: bool = True
    # The pretrained checkpoint ties the output head to the token embedding; the book finetunes
    # them as two tensors that start equal, so untied is the default.
    tie_weights: bool = False

    def __post_init__(self) -> None:
        if self.emb_dim % self.n_heads:
            raise InvalidInput(
                f"emb_dim {self.emb_dim} is not divisible by n_heads {self.n_heads}, in "
                "model.arch; choose n_heads that divides emb_dim"
            )

    @property
    def head_dim(self) -> int:
        return self.emb_dim // self.n_heads


class KVCache:
    """Keys and values of every layer for up to `max_len` positions of a batch of sequences."""

    def __init__(
        self,
        config: GPTConfig,
        batch_size: int,
        max_len: int,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> None:
        if max_len > config.context_length:
            raise ValueError(
                f"cache length {max_len} exceeds the context length {config.context_length}"
            )
        shape = (config.n_layers, batch_size, config.n_heads, max_len, config.head_dim)
        self.keys = torch.zeros(shape, dtype=dtype, device=device)
        self.values = torch.zeros(shape, dtype=dtype, device=device)
        self.length = 0  # positions filled so far, the same for every layer once a forward ends

    @property
    def max_len(self) -> int:
        return self.keys.shape[3]

    def update(self, layer: int, keys: Tensor, values: Tensor) -> tuple[Tensor, Tensor]:
        """Stores the new positions of one layer and returns all its keys and values so far."""
        end = self.length + keys.shape[2]
        if end > self.max_len:
            raise ValueError(f"KV cache overflow: {end} positions, room for {self.max_len}")
        self.keys[layer, :, :, self.length : end] = keys
        self.values[layer, :, :, self.length : end] = values
        return self.keys[layer, :, :, :end], self.values[layer, :, :, :end]

    def keep_rows(self, rows: Tensor) -> None:
        """Keeps the sequences at `rows` (indices into the batch), dropping the others."""
        filled = slice(0, self.length)
        for name in ("keys", "values"):
            old = getattr(self, name)
            new = old.new_empty((old.shape[0], len(rows), *old.shape[2:]))
            new[:, :, :, filled] = old[:, rows, :, filled]
            setattr(self, name, new)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig, layer: int) -> None:
        super().__init__()
        self.layer = layer
        self.n_heads = config.n_heads
        self.qkv = nn.Linear(config.emb_dim, 3 * config.emb_dim, bias=config.qkv_bias)
        self.proj = nn.Linear(config.emb_dim, config.emb_dim)
        self.drop_rate = config.drop_rate
        self.resid_drop = nn.Dropout(config.drop_rate)

    def forward(self, x: Tensor, attn_mask: Tensor | None, cache: KVCache | None) -> Tensor:
        batch, seq_len, emb_dim = x.shape
        q, k, v = self.qkv(x).split(emb_dim, dim=2)
        # (B, T, C) -> (B, n_heads, T, head_dim)
        q, k, v = (t.view(batch, seq_len, self.n_heads, -1).transpose(1, 2) for t in (q, k, v))
        if cache is not None:
            k, v = cache.update(self.layer, k, v)
        y = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=attn_mask,
            dropout_p=self.drop_rate if self.training else 0.0,
            is_causal=attn_mask is None,
        )
        y = y.transpose(1, 2).reshape(batch, seq_len, emb_dim)
        return self.resid_drop(self.proj(y))


class MLP(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.fc = nn.Linear(config.emb_dim, 4 * config.emb_dim)
        self.act = nn.GELU(approximate="tanh")
        self.proj = nn.Linear(4 * config.emb_dim, config.emb_dim)
        self.drop = nn.Dropout(config.drop_rate)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.proj(self.act(self.fc(x))))


class Block(nn.Module):
    """Pre-LayerNorm transformer block."""

    def __init__(self, config: GPTConfig, layer: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(config.emb_dim, eps=1e-5)
        self.attn = CausalSelfAttention(config, layer)
        self.norm2 = nn.LayerNorm(config.emb_dim, eps=1e-5)
        self.mlp = MLP(config)

    def forward(self, x: Tensor, attn_mask: Tensor | None, cache: KVCache | None) -> Tensor:
        x = x + self.attn(self.norm1(x), attn_mask, cache)
        return x + self.mlp(self.norm2(x))


class GPT(nn.Module):
    """GPT-2: token + learned position embeddings, transformer blocks, final LayerNorm, head."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.emb_dim)
        self.pos_emb = nn.Embedding(config.context_length, config.emb_dim)
        self.drop = nn.Dropout(config.drop_rate)
        self.blocks = nn.ModuleList(Block(config, layer) for layer in range(config.n_layers))
        self.final_norm = nn.LayerNorm(config.emb_dim, eps=1e-5)
        self.out_head = nn.Linear(config.emb_dim, config.vocab_size, bias=False)
        # Trades compute for memory while training: see `hidden_states`.
        self.activation_checkpointing = False
        self.apply(self._init_weights)
        # GPT-2 scales the init of the projections into the residual stream by 1/sqrt(2 * n_layers).
        for name, param in self.named_parameters():
            if name.endswith("proj.weight"):
                nn.init.normal_(param, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layers))
        if config.tie_weights:
            self.out_head.weight = self.tok_emb.weight
        else:
            with torch.no_grad():
                self.out_head.weight.copy_(self.tok_emb.weight)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def hidden_states(
        self,
        input_ids: Tensor,
        *,
        positions: Tensor | None = None,
        attn_mask: Tensor | None = None,
        cache: KVCache | None = None,
    ) -> Tensor:
        """Final-LayerNorm hidden states (B, T, emb_dim) of `input_ids` (B, T).

        `positions` (B, T) defaults to 0..T-1 after what `cache` holds; given ones are not checked
        against the context length (that would wait for the device). `attn_mask` is a boolean
        (B, 1, T, T_keys) mask, True where a query may attend a key; without it attention is
        causal (and then a cache must be empty). Every query row must allow at least one key.
        """
        seq_len = input_ids.shape[1]
        start = cache.length if cache is not None else 0
        if positions is None:
            if attn_mask is None and start > 0:
                raise ValueError("decoding on a filled cache needs an explicit attn_mask")
            if start + seq_len > self.config.context_length:
                raise ValueError(
                    f"position {start + seq_len - 1} is past the context length "
                    f"{self.config.context_length}"
                )
            positions = torch.arange(start, start + seq_len, device=input_ids.device).unsqueeze(0)
        x = self.drop(self.tok_emb(input_ids) + self.pos_emb(positions))
        recompute = self.activation_checkpointing and torch.is_grad_enabled()
        for block in self.blocks:
            if recompute:
                # Keeps only each block's input; backward runs the block again (same dropout).
                x = checkpoint(block, x, attn_mask, cache, use_reentrant=False)
            else:
                x = block(x, attn_mask, cache)
        if cache is not None:
            cache.length += seq_len
        return self.final_norm(x)

    def forward(self, input_ids: Tensor, **context: Tensor | KVCache | None) -> Tensor:
        """Logits (B, T, vocab_size) of `input_ids` (B, T); `context` (positions, attn_mask,
        cache) as in `hidden_states`."""
        return self.out_head(self.hidden_states(input_ids, **context))

    def num_parameters(self) -> int:
        """Distinct parameters (a tied head counts once)."""
        return sum(p.numel() for p in self.parameters())
