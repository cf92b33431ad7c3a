"""Encoding entries into token ids, and the padding/masking collate every data format uses."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm import tqdm

from lit_sft.data.entries import Entry
from lit_sft.prompts import PromptStyle
from lit_sft.tokenizer import END_OF_TEXT, IGNORE_INDEX, Tokenizer

# Entries per tiktoken batch: big for its threads, small for a smooth bar (shown past one chunk).
ENCODE_CHUNK = 4096


@dataclass(frozen=True)
class EncodedEntry:
    """The token ids of prompt + response; the first `prompt_length` of them are the prompt."""

    tokens: list[int]
    prompt_length: int


def encode_entry(entry: Entry, style: PromptStyle, tokenizer: Tokenizer) -> EncodedEntry:
    """Prompt and response encoded separately, so the prompt's length (and the mask) is exact."""
    prompt = tokenizer.encode(style.prompt(entry))
    return EncodedEntry(prompt + tokenizer.encode(entry["output"]), len(prompt))


def shows_progress(entries: int) -> bool:
    """Whether encoding this many entries shows a progress bar: from one chunk on."""
    return entries >= ENCODE_CHUNK


def encode_entries(
    entries: Sequence[Entry], style: PromptStyle, tokenizer: Tokenizer, progress: bool = False
) -> list[EncodedEntry]:
    """`encode_entry` of each entry, in tiktoken's batch encoding (threads), with a progress bar."""
    encoded: list[EncodedEntry] = []
    with tqdm(total=len(entries), desc="encoding", unit="entry", disable=not progress) as bar:
        for start in range(0, len(entries), ENCODE_CHUNK):
            chunk = entries[start : start + ENCODE_CHUNK]
            prompts = tokenizer.encode_batch([style.prompt(e) for e in chunk])
            outputs = tokenizer.encode_batch([e["output"] for e in chunk])
            encoded += [EncodedEntry(p + o, len(p)) for p, o in zip(prompts, outputs, strict=True)]
            bar.update(len(chunk))
    return encoded


def collate_instructions(
    batch: Sequence[EncodedEntry],
    *,
    pad_id: int = END_OF_TEXT,
    ignore_index: int = IGNORE_INDEX,
    mask_instructions: bool = False,
    allowed_max_length: int | None = None,
) -> dict[str, Tensor]:
    """A padded batch: `input_ids`, `targets` (shifted by one) and `response_start` per entry.

    Each sequence gets one end-of-text appended and is padded with `pad_id` to the longest; the
    first end-of-text stays a target (so the model learns to stop), the rest of the padding is
    `ignore_index`. `response_start[i]` is the first target index of entry i's response.
    """
    lengths = torch.tensor([len(item.tokens) for item in batch])
    padded = torch.full((len(batch), int(lengths.max()) + 1), pad_id, dtype=torch.long)
    for row, item in enumerate(batch):
        padded[row, : len(item.tokens)] = torch.tensor(item.tokens)
    input_ids, targets = padded[:, :-1], padded[:, 1:].clone()
    positions = torch.arange(targets.shape[1])
    targets[positions >= lengths.unsqueeze(1)] = ignore_index
    response_start = torch.tensor([item.prompt_length - 1 for item in batch])
    if mask_instructions:
        targets[positions < response_start.unsqueeze(1)] = ignore_index
    if allowed_max_length is not None:
        input_ids, targets = input_ids[:, :allowed_max_length], targets[:, :allowed_max_length]
    return {
        "input_ids": input_ids.contiguous(),
        "targets": targets,
        "response_start": response_start,
    }
