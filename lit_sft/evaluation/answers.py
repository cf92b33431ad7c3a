"""Answering a test split with a model, resumably: one JSON file rewritten after every batch."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from lit_sft.data.entries import Entry
from lit_sft.data.sft import InstructionDataModule
from lit_sft.errors import InvalidInput
from lit_sft.files import write_json_atomic
from lit_sft.generation import generate
from lit_sft.model import GPT
from lit_sft.prepack import prepacked_linears
from lit_sft.prompts import PromptStyle
from lit_sft.tokenizer import Tokenizer


def rebuild_test_split(datamodule: InstructionDataModule) -> list[Entry]:
    """The test split exactly as training built it: same file or synthetic seed, same fractions."""
    datamodule.prepare_data()
    datamodule.setup("test")
    return datamodule.splits["test"]


def read_responses(path: Path, entries: Sequence[Entry]) -> list[dict[str, Any] | None]:
    """The answer to each of `entries` that a previous run left in `path`; None where none yet.

    Answers are made in order of prompt length, so a stopped run leaves null in the places it
    had not reached. A longer file (an earlier run without `limit`) is fine; one for other
    entries is an error.
    """
    if not path.is_file():
        return [None] * len(entries)
    answered = json.loads(path.read_text(encoding="utf-8"))[: len(entries)]
    for index, record in enumerate(answered):
        if record is None:
            continue
        unanswered = {k: v for k, v in record.items() if k != "model_response"}
        if unanswered != entries[index] or "model_response" not in record:
            raise InvalidInput(
                f"{path} does not match this test split (entry {index} differs); "
                "delete it to answer the test split again"
            )
    return answered + [None] * (len(entries) - len(answered))


@dataclass(frozen=True)
class GenerationStats:
    """How fast one evaluation made its answers (those it made itself, not resumed ones)."""

    answers: int
    new_tokens: int
    seconds: float

    @property
    def tokens_per_sec(self) -> float:
        return self.new_tokens / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict[str, float]:
        return {**asdict(self), "tokens_per_sec": self.tokens_per_sec}


def generate_responses(
    model: GPT,
    entries: Sequence[Entry],
    style: PromptStyle,
    path: Path,
    *,
    batch_size: int = 8,
    max_new_tokens: int = 256,
    temperature: float = 0.0,
    top_k: int | None = None,
    seed: int = 123,
    progress: bool = True,
    prepack_weights: bool = True,
) -> tuple[list[dict[str, Any]], GenerationStats]:
    """`entries` with a `model_response` each, rewriting `path` after every batch.

    Entries already answered in `path` (a stopped earlier run) are kept, not generated again.
    The others are answered longest prompt first, so that a batch holds prompts of about one
    length and pads little; `path` and the result keep the order of `entries`.
    `prepack_weights`: on the CPU, decode through weights reordered once for oneDNN
    (`lit_sft.prepack`): faster, for the weights' memory again while answering.
    """
    tokenizer = Tokenizer()
    answered = read_responses(path, entries)
    todo = [i for i, record in enumerate(answered) if record is None]
    prompts = {i: tokenizer.encode(style.prompt(entries[i])) for i in todo}
    todo.sort(key=lambda i: len(prompts[i]), reverse=True)
    generator = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    new_tokens, began = 0, time.perf_counter()
    bar = tqdm(
        total=len(entries),
        initial=len(entries) - len(todo),
        desc="answering",
        unit="entry",
        disable=not progress,
    )
    with bar, prepacked_linears(model, batch_size, enabled=prepack_weights and bool(todo)):
        for start in range(0, len(todo), batch_size):
            batch = todo[start : start + batch_size]
            answers = generate(
                model,
                [prompts[i] for i in batch],
                max_new_tokens=max_new_tokens,
                eos_id=tokenizer.eos_id,
                temperature=temperature,
                top_k=top_k,
                generator=generator,
                prepack_weights=prepack_weights,
            )
            for index, tokens in zip(batch, answers, strict=True):
                response = style.extract_response(tokenizer.decode(tokens))
                answered[index] = {**entries[index], "model_response": response}
                new_tokens += len(tokens)
            write_json_atomic(path, answered)
            bar.update(len(batch))
    stats = GenerationStats(len(todo), new_tokens, time.perf_counter() - began)
    return answered, stats
