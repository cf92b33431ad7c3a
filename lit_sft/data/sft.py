"""Instruction (SFT) data: `{instruction, input, output}` entries, padded (or packed) and masked."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

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
        prompt_style: str = "alpaca",
        batch_size: int = 8,
        mask_instructions: bool = False,
        allowed_max_length: int = 1024,
        train_fraction: float = 0.85,
        test_fraction: float = 0.10,
        shuffle: bool = True,
        group_by_length: bool = False,
        packing: bool = False,
        num_workers: int = 0,
        seed: int = 123,
        synthetic_size: int = 2000,
        cache_dir: str | None = None,
        overlength: str = "truncate",
        max_train_entries: int | None = None,
    ) -> None:
        """`mask_instructions`: the prompt's targets ignored; `packing`: each train batch's
        examples packed into rows of up to `allowed_max_length` positions
        (`lit_sft.data.packing`): the same examples per step, no padding computed. The other
        options are `BaseDataModule`'s."""
        super().__init__(
            path,
            prompt_style=prompt_style,
            batch_size=batch_size,
            allowed_max_length=allowed_max_length,
            train_fraction=train_fraction,
            test_fraction=test_fraction,
            shuffle=shuffle,
            group_by_length=group_by_length,
            num_workers=num_workers,
            seed=seed,
            synthetic_size=synthetic_size,
            cache_dir=cache_dir,
            overlength=overlength,
            max_train_entries=max_train_entries,
        )
        self.mask_instructions = mask_instructions
        self.packing = packing

    def entries(self) -> list[Entry]:
        if self.path is None:
            return synthetic_entries(self.synthetic_size, seed=self.seed)
        return load_entries(self.path, self.cache_dir)

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
