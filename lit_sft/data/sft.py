"""Instruction (SFT) data: `{instruction, input, output}` entries, padded (or packed) and masked."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

from lit_sft.data.base import BaseDataModule, Collate
from lit_sft.data.encoding import (
    EncodedEntry,
    collate_instructions,
    encode_entries,
    shows_progress,
)
from lit_sft.data.entries import Entry, load_entries
from lit_sft.data.packing import PackedCollate
from lit_sft.data.synthetic import synthetic_entries

BOOK_DATA_URL = (
    "https://raw.githubusercontent.com/rasbt/LLMs-from-scratch/main/ch07/01_main-chapter-code/"
    "instruction-data.json"
)


class InstructionDataModule(BaseDataModule):
    """Loads, splits, encodes and batches an instruction dataset in one prompt style."""

    def __init__(
        self,
        path: str | None = BOOK_DATA_URL,
        mask_instructions: bool = False,
        packing: bool = False,
        **options: Any,
    ) -> None:
        """`mask_instructions`: the prompt's targets ignored; `packing`: each train batch's
        examples packed into rows of up to `allowed_max_length` positions
        (`lit_sft.data.packing`): the same examples per step, no padding computed. `options`:
        `BaseDataModule`'s (an unknown one fails there, by name)."""
        super().__init__(path, **options)
        self.mask_instructions = mask_instructions
        self.packing = packing

    def entries(self) -> list[Entry]:
        if self.path is None:
            return synthetic_entries(self.synthetic_size, seed=self.seed)
        return load_entries(self.path, self.cache_dir, field_map=self.fields)

    def encode(self, entries: Sequence[Entry]) -> list[EncodedEntry]:
        progress = shows_progress(len(entries))
        return encode_entries(entries, self.style, self.tokenizer, progress=progress)

    def collate(self) -> partial:
        """The collate function with this DataModule's masking and truncation."""
        return partial(
            collate_instructions,
            mask_instructions=self.mask_instructions,
            allowed_max_length=self.allowed_max_length,
        )

    def train_collate(self) -> Collate:
        collate = self.collate()
        return PackedCollate(collate, self.allowed_max_length) if self.packing else collate
