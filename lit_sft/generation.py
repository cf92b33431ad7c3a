"""Batched, left-padded generation with a key/value cache: each new token costs one position."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import Tensor

from lit_sft.model import GPT, KVCache
from lit_sft.tokenizer import END_OF_TEXT


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int) -> tuple[Tensor, Tensor]:
    """Token ids (B, P) with the prompts right-aligned, and a mask of the real tokens."""
    length = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), length), pad_id, dtype=torch.long)
    real = torch.zeros((len(prompts), length), dtype=torch.bool)
    for row, prompt in enumerate(prompts):
        if prompt:
            ids[row, length - len(prompt) :] = torch.tensor(list(prompt))
            real[row, length - len(prompt) :] = True
    return ids, real


def attention_mask(real: Tensor, query_start: int) -> Tensor:
    """Boolean (B, 1, T_q, T_k) mask: causal, real keys only; a padding query sees itself."""
    total = real.shape[1]
    keys = torch.arange(total, device=real.device)
    queries = torch.arange(query_start, total, device=real.device).unsqueeze(1)
    allowed = (keys <= queries) & real.unsqueeze(1)
    # A left-padding query would otherwise attend nothing and turn into NaN, which its value
    # vector would then carry into every later position through the zero attention weight.
    allowed |= keys == queries
    return allowed.unsqueeze(1)


def positions_of(real: Tensor) -> Tensor:
    """Each real token's position within its own sequence, so left padding shifts nothing."""
    return (real.long().cumsum(dim=1) - 1).clamp(min=0)


def next_token(
    logits: Tensor, temperature: float, top_k: int | None, generator: torch.Generator | None
) -> Tensor:
    """Greedy for temperature 0, else sampling from the (top-k) softmax; logits (B, V) -> (B,)."""
    if temperature <= 0.0:
        return logits.argmax(dim=-1)
    logits = logits / temperature
    if top_k is not None:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)


@torch.inference_mode()
def generate(
    model: GPT,
    prompts: Sequence[Sequence[int]],
    *,
    max_new_tokens: int = 256,
    eos_id: int = END_OF_TEXT,
    temperature: float = 0.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
) -> list[list[int]]:
    """The new tokens of each prompt, up to `eos_id` (excluded) or `max_new_tokens`.

    Prompts longer than the context keep their last tokens; generation never goes past the
    context length.
    """
    new_tokens = list(
        decode_steps(
            model,
            prompts,
            max_new_tokens=max_new_tokens,
            eos_id=eos_id,
            temperature=temperature,
            top_k=top_k,
            generator=generator,
            use_cache=use_cache,
        )
    )
    return (
        [_until_eos(column, eos_id) for column in torch.stack(new_tokens, 1).tolist()]
        if new_tokens
        else [[] for _ in prompts]
    )


def stream(
    model: GPT,
    prompt: Sequence[int],
    *,
    max_new_tokens: int = 256,
    eos_id: int = END_OF_TEXT,
    temperature: float = 0.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
) -> Iterator[int]:
    """`generate` of one prompt, yielding each new token as soon as it is chosen."""
    steps = decode_steps(
        model,
        [prompt],
        max_new_tokens=max_new_tokens,
        eos_id=eos_id,
        temperature=temperature,
        top_k=top_k,
        generator=generator,
    )
    for token in steps:
        if int(token[0]) == eos_id:
            return
        yield int(token[0])


def decode_steps(
    model: GPT,
    prompts: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    eos_id: int,
    temperature: float,
    top_k: int | None,
    generator: torch.Generator | None,
    use_cache: bool = True,
) -> Iterator[Tensor]:
    """The token (B,) chosen at each step, `eos_id` once a sequence is done; stops when all are."""
    context = model.config.context_length
    prompts = [list(p)[-(context - 1) :] for p in prompts]
    device = next(model.parameters()).device
    # Attention never sees the padding, so any id in the vocabulary will do; `eos_id` need not be
    # one (-1 never stops).
    ids, real = left_pad(prompts, pad_id=0)
    ids, real = ids.to(device), real.to(device)
    steps = min(max_new_tokens, context - ids.shape[1])
    cache = (
        KVCache(
            model.config,
            len(prompts),
            ids.shape[1] + steps,
            dtype=model.tok_emb.weight.dtype,
            device=device,
        )
        if use_cache
        else None
    )
    done = torch.zeros(len(prompts), dtype=torch.bool, device=device)
    start = 0
    for _ in range(steps):
        # Inference mode per step, not around the generator, so a caller may stop between steps.
        with torch.inference_mode():
            logits = model(
                ids[:, start:],
                positions=positions_of(real)[:, start:],
                attn_mask=attention_mask(real, start),
                cache=cache,
            )[:, -1]
            token = next_token(logits.float(), temperature, top_k, generator)
            token = torch.where(done, eos_id, token)
            done |= token == eos_id
        yield token
        if bool(done.all()):
            return
        ids = torch.cat([ids, token.unsqueeze(1)], dim=1)
        real = torch.cat([real, torch.ones_like(token, dtype=torch.bool).unsqueeze(1)], dim=1)
        start = ids.shape[1] - 1 if use_cache else 0


def _until_eos(tokens: list[int], eos_id: int) -> list[int]:
    return tokens[: tokens.index(eos_id)] if eos_id in tokens else tokens
