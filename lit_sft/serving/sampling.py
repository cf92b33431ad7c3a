"""Each row of a batch drawn with its own request's settings: greedy, temperature, top-k, top-p."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from lit_sft.generation import next_token


@dataclass(frozen=True)
class SamplingParams:
    """How one request's tokens are chosen: greedy for temperature 0, else sampled."""

    temperature: float = 0.0
    top_k: int | None = None
    top_p: float | None = None  # None or 1.0: no nucleus cut
    seed: int | None = None  # None: a fresh random seed

    def generator(self, device: torch.device | str) -> torch.Generator:
        """A generator seeded with `seed`: a request draws the same whatever it is batched with."""
        generator = torch.Generator(device=device)
        if self.seed is None:
            generator.seed()
        else:
            generator.manual_seed(self.seed)
        return generator


def top_p_filter(logits: Tensor, top_p: float) -> Tensor:
    """`logits` (B, V) with every token outside the smallest set of mass >= `top_p` at -inf."""
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    probs = sorted_logits.softmax(dim=-1)
    # A token is cut when the tokens before it already reach top_p; the first is always kept.
    cut = probs.cumsum(dim=-1) - probs >= top_p
    return logits.scatter(-1, order, sorted_logits.masked_fill(cut, float("-inf")))


def sample_row(logits: Tensor, p: SamplingParams, generator: torch.Generator) -> Tensor:
    """One token (1,) drawn from `logits` (1, V): top-k first, then top-p of what is left."""
    if p.top_p is None or p.top_p >= 1.0:
        return next_token(logits, p.temperature, p.top_k, generator)
    logits = logits / p.temperature
    if p.top_k is not None:
        logits = logits.masked_fill(logits < torch.topk(logits, p.top_k).values[:, -1:], -torch.inf)
    probs = top_p_filter(logits, p.top_p).softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)


def choose_tokens(
    logits: Tensor, params: Sequence[SamplingParams], generators: Sequence[torch.Generator]
) -> Tensor:
    """The next token (B,) of each row of `logits` (B, V), drawn with that row's settings.

    A row draws what `lit_sft.generation.generate` draws for its prompt alone with the same
    settings and generator (top-p aside, which `generate` lacks).
    """
    tokens = logits.argmax(dim=-1)
    for row, (p, generator) in enumerate(zip(params, generators, strict=True)):
        if p.temperature > 0.0:
            tokens[row] = sample_row(logits[row : row + 1], p, generator)[0]
    return tokens
