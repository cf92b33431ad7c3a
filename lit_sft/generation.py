"""Batched, left-padded generation with a key/value cache: each new token costs one position."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from lit_sft.model import GPT, KVCache
from lit_sft.prepack import is_prepacked, prepacked_linears
from lit_sft.tokenizer import END_OF_TEXT

# Checking whether every answer has ended copies a flag to the host, which waits for the device;
# doing it every few steps costs at most this many steps past the last end-of-text.
DONE_CHECK_EVERY = 8
# At a check, the done answers leave the batch once they are this share of it: dropping them
# copies the cache, which pays only when later steps get that much cheaper.
DROP_DONE_SHARE = 0.25


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

    Unless the head is prepacked, as weight @ hidden.T: for a few rows, MKL's GEMM streams the
    (V, C) weight about twice as fast in this order as in `out_head`'s hidden @ weight.T.
    """
    last = hidden[:, -1]
    return (
        model.out_head(last) if is_prepacked(model.out_head) else (model.out_head.weight @ last.T).T
    )


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
    prepack_weights: bool = True,
) -> list[list[int]]:
    """The new tokens of each prompt, up to `eos_id` (excluded) or `max_new_tokens`.

    Prompts longer than the context keep their last tokens; generation never goes past the
    context length. `prepack_weights`: on the CPU, decode through weights reordered for oneDNN
    (`lit_sft.prepack`; faster, for the weights' memory again).
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
        prepack_weights=prepack_weights,
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
    prepack_weights: bool = True,
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
        prepack_weights=prepack_weights,
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
    prepack_weights: bool = True,
) -> Iterator[Tensor]:
    """The tokens (B,) chosen at each step, `eos_id` once a sequence is done.

    Every `DONE_CHECK_EVERY` steps (a host sync) it stops if every sequence is done, and drops
    the done ones from the batch once they are `DROP_DONE_SHARE` of it or more.
    """
    context = model.config.context_length
    prompts = [list(p)[-(context - 1) :] for p in prompts]
    device = next(model.parameters()).device
    # Attention never sees the padding, so any id in the vocabulary will do; `eos_id` need not be
    # one (-1 never stops).
    prompt_ids, prompt_real = left_pad(prompts, pad_id=0)
    steps = min(max_new_tokens, context - prompt_ids.shape[1])
    rows = DecodingRows.start(model, prompt_ids, prompt_real, steps, use_cache, device)
    with prepacked_linears(model, len(prompts), enabled=prepack_weights):
        for step in range(steps):
            # Inference mode per step, not around the generator, so a caller may stop between
            # steps.
            with torch.inference_mode():
                logits = last_logits(model, rows.forward(model))
                chosen = next_token(logits.float(), temperature, top_k, generator)
                tokens = torch.full((len(prompts),), eos_id, dtype=torch.long, device=device)
                tokens[rows.index] = rows.append(chosen, eos_id)
            yield tokens
            if (step + 1) % DONE_CHECK_EVERY == 0:
                done = int(rows.done.sum())
                if done == len(rows.done):
                    return
                if done and done >= DROP_DONE_SHARE * len(rows.done):
                    rows.drop_done()


@dataclass
class DecodingRows:
    """The sequences a generation still decodes: their tokens, positions, cache and state.

    `ids` and `real` hold every position the generation can reach, filled in place: no per-step
    concatenation, and positions and the real-token mask computed once.
    """

    ids: Tensor  # (B, P + steps) token ids, left-padded prompts first
    real: Tensor  # (B, P + steps) True at real tokens
    positions: Tensor  # (B, P + steps) each token's position within its own sequence
    cache: KVCache | None
    done: Tensor  # (B,) True once a sequence has chosen end-of-text
    index: Tensor  # (B,) each row's place in the batch the generation began with
    end: int  # positions fed so far, and the column of the next token

    @classmethod
    def start(
        cls,
        model: GPT,
        prompt_ids: Tensor,
        prompt_real: Tensor,
        steps: int,
        use_cache: bool,
        device: torch.device,
    ) -> DecodingRows:
        batch, prompt_len = prompt_ids.shape
        ids = torch.zeros((batch, prompt_len + steps), dtype=torch.long)
        real = torch.ones((batch, prompt_len + steps), dtype=torch.bool)
        ids[:, :prompt_len], real[:, :prompt_len] = prompt_ids, prompt_real
        ids, real = ids.to(device), real.to(device)
        dtype = model.tok_emb.weight.dtype
        cache = (
            KVCache(model.config, batch, prompt_len + steps, dtype=dtype, device=device)
            if use_cache
            else None
        )
        done = torch.zeros(batch, dtype=torch.bool, device=device)
        index = torch.arange(batch, device=device)
        return cls(ids, real, positions_of(real), cache, done, index, prompt_len)

    def forward(self, model: GPT) -> Tensor:
        """Hidden states (B, T, C) of the positions not yet in the cache (all, without one)."""
        start = self.cache.length if self.cache is not None else 0
        # A decoding query (one real token) attends every real key before it: the mask is a view
        # of `real`. The prompt (and every uncached step) needs the full causal mask.
        real = self.real[:, : self.end]
        mask = real[:, None, None, :] if start > 0 else attention_mask(real, start)
        return model.hidden_states(
            self.ids[:, start : self.end],
            positions=self.positions[:, start : self.end],
            attn_mask=mask,
            cache=self.cache,
        )

    def append(self, chosen: Tensor, eos_id: int) -> Tensor:
        """Feeds the chosen tokens (B,) to the next step, `eos_id` for done rows; returns them."""
        tokens = torch.where(self.done, eos_id, chosen)
        self.done |= tokens == eos_id
        self.ids[:, self.end] = tokens
        self.end += 1
        return tokens

    def drop_done(self) -> None:
        """Keeps only the rows still decoding: later steps compute nothing for the others."""
        keep = (~self.done).nonzero().squeeze(1)
        self.ids, self.real = self.ids[keep], self.real[keep]
        self.positions, self.done, self.index = (
            self.positions[keep],
            self.done[keep],
            self.index[keep],
        )
        if self.cache is not None:
            self.cache.keep_rows(keep)


def _until_eos(tokens: list[int], eos_id: int) -> list[int]:
    return tokens[: tokens.index(eos_id)] if eos_id in tokens else tokens
