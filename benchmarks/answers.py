"""Answering test prompts both ways on the same weights: lit_sft's cached, batched generation and
the book's `generate` (no cache, one prompt at a time), and what a decode step must read."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import tiktoken
import torch

from benchmarks.common import NEVER, Book, timed
from lit_sft.checkpoints import load_model
from lit_sft.data.entries import load_entries, split_entries
from lit_sft.data.synthetic import synthetic_entries
from lit_sft.evaluation.answers import longest_first
from lit_sft.generation import generate
from lit_sft.model import GPT
from lit_sft.prompts import prompt_style

Answers = list[list[int]]


def prompt_tokens(data: str, n: int, style: str = "alpaca") -> list[list[int]]:
    """The token ids of the first `n` test-set prompts (of a synthetic set where `data` is not)."""
    entries = load_entries(data) if Path(data).is_file() else synthetic_entries(2000, seed=123)
    tokenizer = tiktoken.get_encoding("gpt2")
    return [tokenizer.encode(prompt_style(style).prompt(e)) for e in split_entries(entries)[1][:n]]


def lit_model(config: dict[str, Any], weights: str) -> GPT:
    """lit_sft's model holding `weights`, for answering."""
    return load_model(dict(config), Path(weights)).eval()


def cached_batched(
    model: GPT, prompts: Answers, new: int, batch_size: int, eos: int = NEVER, prepack: bool = True
) -> Answers:
    """Longest prompt first, in batches, as `evaluate.py` answers; the answers in prompt order."""
    answers: dict[int, list[int]] = {}
    for batch in longest_first(dict(enumerate(prompts)), batch_size):
        made = generate(
            model,
            [prompts[i] for i in batch],
            max_new_tokens=new,
            eos_id=eos,
            prepack_weights=prepack,
        )
        answers.update(zip(batch, made, strict=True))
    return [answers[i] for i in range(len(prompts))]


def uncached(model: GPT, prompts: Answers, new: int, eos: int = NEVER) -> Answers:
    """lit_sft without its cache, one prompt at a time."""
    return [
        generate(model, [p], max_new_tokens=new, eos_id=eos, use_cache=False)[0] for p in prompts
    ]


def book_answers(book: Book, config: dict[str, Any], weights: str) -> Callable[..., Answers]:
    """The book's `generate` on its GPTModel holding `weights`: `(prompts, new, eos) -> answers`."""
    model = book.model(config, weights).eval()
    book_generate = book.module("previous_chapters").generate

    def run(prompts: Answers, new: int, eos: int = NEVER) -> Answers:
        out = [
            book_generate(model, torch.tensor([p]), new, config["context_length"], eos_id=eos)
            for p in prompts
        ]
        return [o[0, len(p) :].tolist() for o, p in zip(out, prompts, strict=True)]

    return run


def positions_processed(prompts: Answers, new: int) -> int:
    """Positions an uncached generation of `new` tokens runs through: prompt + t for each t. A
    short run's time per position carries over to the full length."""
    return sum(len(p) * new + new * (new - 1) // 2 for p in prompts)


def copy_bandwidth(megabytes: int = 512, repeats: int = 5) -> float:
    """Bytes moved per second (read + written) copying a large tensor: the best of `repeats`."""
    source = torch.ones(megabytes * 2**20 // 4)
    target = torch.empty_like(source)
    target.copy_(source)
    best = min(timed(lambda: target.copy_(source))[1] for _ in range(repeats))
    return 2 * source.numel() * 4 / best


def decode_bytes(model: GPT) -> int:
    """The bytes of the weights one decode step reads: all but the two embedding tables, which
    it reads a row of per token, and the output head (the token table too, when tied)."""
    skip = {id(model.tok_emb.weight), id(model.pos_emb.weight)}
    head = model.out_head.weight
    read = sum(p.numel() * p.element_size() for p in model.parameters() if id(p) not in skip)
    return read + (head.numel() * head.element_size() if id(head) in skip else 0)


def same_answers(ours: Answers, theirs: Answers) -> int:
    """How many of `theirs` equal ours (ours cut to their length: a shorter run's prefix)."""
    return sum(t == o[: len(t)] for o, t in zip(ours, theirs, strict=False))


def staggered_end(answers: Answers) -> int:
    """The token that, as end-of-text, ends the most of these answers without ending them all."""
    counts = {t: sum(t in a for a in answers) for t in {t for a in answers for t in a}}
    return max((t for t, n in counts.items() if n < len(answers)), key=lambda t: (counts[t], -t))
