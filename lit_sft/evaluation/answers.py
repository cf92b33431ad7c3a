"""Answering a test split with a model, resumably: one JSON file rewritten after every batch."""

from __future__ import annotations

import json
from collections.abc import Sequence
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
from lit_sft.prompts import PromptStyle
from lit_sft.tokenizer import Tokenizer


def rebuild_test_split(datamodule: InstructionDataModule) -> list[Entry]:
    """The test split exactly as training built it: same file or synthetic seed, same fractions."""
    datamodule.prepare_data()
    datamodule.setup("test")
    return datamodule.splits["test"]


def read_responses(path: Path, entries: Sequence[Entry]) -> list[dict[str, Any]]:
    """The answers to the first of `entries` that a previous run left in `path`.

    A longer file (an earlier run without `limit`) is fine; one for other entries is an error.
    """
    if not path.is_file():
        return []
    answered = json.loads(path.read_text(encoding="utf-8"))[: len(entries)]
    for index, record in enumerate(answered):
        unanswered = {k: v for k, v in record.items() if k != "model_response"}
        if unanswered != entries[index] or "model_response" not in record:
            raise InvalidInput(
                f"{path} does not match this test split (entry {index} differs); "
                "delete it to answer the test split again"
            )
    return answered


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
) -> list[dict[str, Any]]:
    """`entries` with a `model_response` each, rewriting `path` after every batch.

    Entries already answered in `path` (a stopped earlier run) are kept, not generated again.
    """
    tokenizer = Tokenizer()
    answered = read_responses(path, entries)
    generator = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    with tqdm(
        total=len(entries),
        initial=len(answered),
        desc="answering",
        unit="entry",
        disable=not progress,
    ) as bar:
        for start in range(len(answered), len(entries), batch_size):
            batch = entries[start : start + batch_size]
            prompts = [tokenizer.encode(style.prompt(e)) for e in batch]
            answers = generate(
                model,
                prompts,
                max_new_tokens=max_new_tokens,
                eos_id=tokenizer.eos_id,
                temperature=temperature,
                top_k=top_k,
                generator=generator,
            )
            for entry, tokens in zip(batch, answers, strict=True):
                response = style.extract_response(tokenizer.decode(tokens))
                answered.append({**entry, "model_response": response})
            write_json_atomic(path, answered)
            bar.update(len(batch))
    return answered
