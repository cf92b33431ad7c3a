"""Packed batches: a batch's examples laid end to end in rows, each attending only to itself.

A padded batch of the book's set is ≈ 20 % padding that the transformer computes and throws
away. Packing the same examples into rows of up to `row_length` positions removes it while the
optimizer step sees exactly the examples, targets and token weights of the padded batch: only
attention changes shape (a block-diagonal causal mask over a longer row), so the loss is the
padded batch's up to float rounding.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from lit_sft.data.encoding import EncodedEntry
from lit_sft.tokenizer import END_OF_TEXT, IGNORE_INDEX


def pack_rows(lengths: Sequence[int], row_length: int) -> list[list[int]]:
    """The examples (indices into `lengths`) of each row, first-fit decreasing into rows of at
    most `row_length` positions; an example longer than that gets a row of its own."""
    rows: list[list[int]] = []
    room: list[int] = []
    for index in sorted(range(len(lengths)), key=lambda i: lengths[i], reverse=True):
        row = next((r for r, free in enumerate(room) if lengths[index] <= free), None)
        if row is None:
            rows.append([])
            room.append(row_length)
            row = len(rows) - 1
        rows[row].append(index)
        room[row] -= lengths[index]
    return rows


def pack_batch(
    padded: dict[str, Tensor], lengths: Sequence[int], row_length: int, pad_id: int = END_OF_TEXT
) -> dict[str, Tensor]:
    """`padded` (a collated batch: `input_ids`, `targets` (B, T)) with each example's first
    `lengths[i]` positions packed into rows.

    Returns `input_ids` and `targets` (R, L) (padding: the pad id and ignored targets),
    `positions` (R, L) restarting at 0 for each example, and `attn_mask` (R, 1, L, L): True where
    a position may attend, causal within its own example; a padding position sees itself only.
    """
    rows = pack_rows(lengths, row_length)
    width = max(sum(lengths[i] for i in row) for row in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    targets = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    positions = torch.zeros((len(rows), width), dtype=torch.long)
    segments = torch.full((len(rows), width), -1, dtype=torch.long)
    for r, row in enumerate(rows):
        start = 0
        for i in row:
            end = start + lengths[i]
            input_ids[r, start:end] = padded["input_ids"][i, : lengths[i]]
            targets[r, start:end] = padded["targets"][i, : lengths[i]]
            positions[r, start:end] = torch.arange(lengths[i])
            segments[r, start:end] = i
            start = end
    causal = torch.ones((width, width), dtype=torch.bool).tril()
    same_example = (segments.unsqueeze(2) == segments.unsqueeze(1)) & (segments >= 0).unsqueeze(2)
    # A padding query that attended nothing would turn into NaN; it sees itself instead.
    padding_self = (segments < 0).unsqueeze(2) & torch.eye(width, dtype=torch.bool)
    attn_mask = (same_example | padding_self) & causal
    return {
        "input_ids": input_ids,
        "targets": targets,
        "positions": positions,
        "attn_mask": attn_mask.unsqueeze(1),
    }


@dataclass(frozen=True)
class PackedCollate:
    """A collate function whose padded batches come out packed (`pack_batch`) into rows of up to
    `row_length` positions; picklable, for DataLoader workers."""

    collate: Callable[[Sequence[EncodedEntry]], dict[str, Tensor]]
    row_length: int

    def __call__(self, batch: Sequence[EncodedEntry]) -> dict[str, Tensor]:
        padded = self.collate(batch)
        # Truncation (allowed_max_length) cut the padded batch's columns: no example is longer.
        width = padded["input_ids"].shape[1]
        return pack_batch(padded, [min(len(e.tokens), width) for e in batch], self.row_length)
