"""Answering a test split with a model, resumably (one JSON file rewritten after every batch), or
reading answers made elsewhere."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from lit_sft.data.entries import Entry, parse_entries
from lit_sft.data.sft import InstructionDataModule
from lit_sft.errors import InvalidInput, MissingFile
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


# What answering adds to an entry: the answer, its generated token count, and whether it ended
# with end-of-text rather than running out of tokens.
ANSWER_FIELDS = ("model_response", "new_tokens", "ended")


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
        unanswered = {k: v for k, v in record.items() if k not in ANSWER_FIELDS}
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
    limit: int | None = None,
    progress: bool = True,
    prepack_weights: bool = True,
) -> tuple[list[dict[str, Any]], GenerationStats]:
    """The first `limit` (None: all) of `entries` answered, rewriting `path` after every batch.

    Entries already answered in `path` (a stopped earlier run) are kept, not generated again,
    and so are answers past `limit` that an earlier run made. Each answer records
    `model_response`, `new_tokens` (generated tokens) and `ended` (it stopped at end-of-text).
    The others are answered longest prompt first, so that a batch holds prompts of about one
    length and pads little; `path` and the result keep the order of `entries`.
    `prepack_weights`: on the CPU, decode through weights reordered once for oneDNN
    (`lit_sft.prepack`): faster, for the weights' memory again while answering.
    """
    tokenizer = Tokenizer()
    answered = read_responses(path, entries)
    wanted = len(entries) if limit is None else min(limit, len(entries))
    todo = [i for i, record in enumerate(answered[:wanted]) if record is None]
    prompts = {i: tokenizer.encode(style.prompt(entries[i])) for i in todo}
    generator = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    new_tokens, began = 0, time.perf_counter()
    bar = tqdm(
        total=wanted,
        initial=wanted - len(todo),
        desc="answering",
        unit="entry",
        disable=not progress,
    )
    with bar, prepacked_linears(model, batch_size, enabled=prepack_weights and bool(todo)):
        for batch in longest_first(prompts, batch_size):
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
            budget = token_budget([prompts[i] for i in batch], max_new_tokens, model)
            for index, tokens in zip(batch, answers, strict=True):
                answered[index] = {
                    **entries[index],
                    "model_response": style.extract_response(tokenizer.decode(tokens)),
                    "new_tokens": len(tokens),
                    "ended": len(tokens) < budget,
                }
                new_tokens += len(tokens)
            write_json_atomic(path, answered)
            bar.update(len(batch))
    stats = GenerationStats(len(todo), new_tokens, time.perf_counter() - began)
    return answered[:wanted], stats


def longest_first(prompts: Mapping[int, Sequence[int]], batch_size: int) -> list[list[int]]:
    """The keys of `prompts` in batches, longest prompt first: a batch pads little."""
    order = sorted(prompts, key=lambda i: len(prompts[i]), reverse=True)
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


def token_budget(prompts: Sequence[Sequence[int]], max_new_tokens: int, model: GPT) -> int:
    """The most tokens `generate` makes for this batch: fewer only once the context is full.

    The batch's prompts are left-padded to the longest (cut to context - 1, as `generate` does),
    so an answer shorter than this ended with end-of-text.
    """
    context = model.config.context_length
    longest = max(min(len(p), context - 1) for p in prompts)
    return min(max_new_tokens, context - longest)


def read_answers_file(path: Path, response_field: str) -> list[dict[str, Any]]:
    """Entries answered elsewhere (a JSON list or JSON lines), with their `response_field` as
    `model_response`; each needs `instruction`, `output` and that field."""
    if not path.is_file():
        raise MissingFile(f"no answers file {path}, in answers=; give a JSON or JSONL file")
    # The dataset reader's parsing (a JSON list or JSON Lines, a byte-order mark allowed).
    records = parse_entries(path.read_text(encoding="utf-8-sig"), str(path))
    entries = []
    for index, record in enumerate(records):
        missing = [k for k in ("instruction", "output", response_field) if k not in record]
        if missing:
            raise InvalidInput(
                f"entry {index} of {path} lacks {', '.join(missing)}; every entry needs "
                f"instruction, output and the response in response_field={response_field!r}"
            )
        entries.append(
            {
                "instruction": record["instruction"],
                "input": record.get("input", ""),
                "output": record["output"],
                "model_response": record[response_field],
            }
        )
    return entries
