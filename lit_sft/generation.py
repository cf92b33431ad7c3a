"""Batched, left-padded generation with a key/value cache: each new token costs one position."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import Tensor

from lit_sft.model import GPT, KVCache
from lit_sft.tokenizer import END_OF_TEXT

# Checking whether every answer has ended copies a flag to the host, which waits for the device;
# doing it every few steps costs at most this many steps past the last end-of-text.
DONE_CHECK_EVERY = 8


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


def last_logits(model: GPT, hidden: Tensor) -> Tensor:
    """The logits (B, V) of the last position of `hidden` (B, T, C).

    The output head as weight @ hidden.T: for a few rows, CPU GEMMs stream the (V, C) weight
    about twice as fast in this order as in `out_head`'s hidden @ weight.T.
    """
    return (model.out_head.weight @ hidden[:, -1].T).T


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
    steps = decode_steps(
        model,
        prompts,
        max_new_tokens=max_new_tokens,
        eos_id=eos_id,
        temperature=temperature,
        top_k=top_k,
        generator=generator,
        use_cache=use_cache,
    )
    tokens = list(steps)
    if not tokens:
        return [[] for _ in prompts]
    return [_until_eos(row, eos_id) for row in torch.stack(tokens, 1).tolist()]


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
    """The tokens (B,) chosen at each step, `eos_id` once a sequence is done.

    Stops once every sequence is done, checked every `DONE_CHECK_EVERY` steps (a host sync).
    """
    context = model.config.context_length
    prompts = [list(p)[-(context - 1) :] for p in prompts]
    device = next(model.parameters()).device
    # Attention never sees the padding, so any id in the vocabulary will do; `eos_id` need not be
    # one (-1 never stops).
    prompt_ids, prompt_real = left_pad(prompts, pad_id=0)
    batch, prompt_len = prompt_ids.shape
    steps = min(max_new_tokens, context - prompt_len)
    # Every position the generation can reach, filled in place: no per-step concatenation, and
    # positions and the real-token mask computed once.
    ids = torch.zeros((batch, prompt_len + steps), dtype=torch.long)
    real = torch.ones((batch, prompt_len + steps), dtype=torch.bool)
    ids[:, :prompt_len], real[:, :prompt_len] = prompt_ids, prompt_real
    ids, real = ids.to(device), real.to(device)
    positions = positions_of(real)
    cache = (
        KVCache(
            model.config,
            batch,
            prompt_len + steps,
            dtype=model.tok_emb.weight.dtype,
            device=device,
        )
        if use_cache
        else None
    )
    done = torch.zeros(batch, dtype=torch.bool, device=device)
    end = prompt_len  # positions fed so far, and the column of the next token
    for step in range(steps):
        # Inference mode per step, not around the generator, so a caller may stop between steps.
        with torch.inference_mode():
            start = cache.length if cache is not None else 0
            # A decoding query (one real token) attends every real key before it: the mask is a
            # view of `real`. The prompt (and every uncached step) needs the full causal mask.
            mask = real[:, None, None, :end] if start > 0 else attention_mask(real[:, :end], start)
            hidden = model.hidden_states(
                ids[:, start:end], positions=positions[:, start:end], attn_mask=mask, cache=cache
            )
            logits = last_logits(model, hidden).float()
            token = torch.where(done, eos_id, next_token(logits, temperature, top_k, generator))
            done |= token == eos_id
            ids[:, end] = token
        end += 1
        yield token
        if (step + 1) % DONE_CHECK_EVERY == 0 and bool(done.all()):
            return


def _until_eos(tokens: list[int], eos_id: int) -> list[int]:
    return tokens[: tokens.index(eos_id)] if eos_id in tokens else tokens
