"""Sampling `n` answers per prompt from a model, in batches, resumably (a JSON line per prompt)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from lit_sft.data.entries import Entry
from lit_sft.errors import InvalidInput
from lit_sft.generation import generate
from lit_sft.model import GPT
from lit_sft.preferences.records import append_records, read_records
from lit_sft.prepack import prepacked_linears
from lit_sft.prompts import PromptStyle
from lit_sft.tokenizer import Tokenizer


@dataclass(frozen=True)
class SamplingOptions:
    """How the answers are sampled; the same options give the same answers."""

    n: int = 4
    temperature: float = 1.0
    top_k: int | None = None
    seed: int = 123
    max_new_tokens: int = 128
    batch_size: int = 32  # prompts per batch (n rows each)
    prepack_weights: bool = True

    def __post_init__(self) -> None:
        if self.n < 2 or self.batch_size < 1 or self.temperature <= 0:
            raise InvalidInput(
                f"n={self.n} must be >= 2 (a pair needs two answers), batch_size="
                f"{self.batch_size} >= 1 and temperature={self.temperature} > 0 (sampling)"
            )


def sample_answers(
    model: GPT,
    entries: Sequence[Entry],
    style: PromptStyle,
    path: Path,
    options: SamplingOptions,
    *,
    progress: bool = True,
    desc: str = "sampling",
) -> list[list[str]]:
    """`options.n` answers to each entry's prompt, each batch appended to `path` as it ends.

    Prompts already answered in `path` are not sampled again. Batch k holds prompts
    k·batch_size ... and draws from a generator seeded by `seed` + its first index, so a
    resumed run samples what an uninterrupted one would.
    """
    done = read_records(path)
    for index, record in done.items():
        if len(record["answers"]) != options.n:
            raise InvalidInput(
                f"{path} holds {len(record['answers'])} answers for prompt {index}, not "
                f"n={options.n}; pass n={len(record['answers'])}, or delete it to sample again"
            )
    tokenizer = Tokenizer()
    device = next(model.parameters()).device
    size = options.batch_size
    bar = tqdm(
        total=len(entries),
        initial=len(done.keys() & set(range(len(entries)))),
        desc=desc,
        unit="prompt",
        disable=not progress,
    )
    with bar, prepacked_linears(model, size * options.n, enabled=options.prepack_weights):
        for start in range(0, len(entries), size):
            todo = [i for i in range(start, min(start + size, len(entries))) if i not in done]
            if not todo:
                continue
            prompts = [tokenizer.encode(style.prompt(entries[i])) for i in todo]
            tokens = generate(
                model,
                [p for p in prompts for _ in range(options.n)],
                max_new_tokens=options.max_new_tokens,
                eos_id=tokenizer.eos_id,
                temperature=options.temperature,
                top_k=options.top_k,
                generator=torch.Generator(device=device).manual_seed(options.seed + start),
                prepack_weights=options.prepack_weights,
            )
            answers = [style.extract_response(tokenizer.decode(t)) for t in tokens]
            records = [
                {"index": i, "answers": answers[row * options.n : (row + 1) * options.n]}
                for row, i in enumerate(todo)
            ]
            append_records(path, records)
            done.update((r["index"], r) for r in records)
            bar.update(len(todo))
    return [done[i]["answers"] for i in range(len(entries))]
