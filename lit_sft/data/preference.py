"""Preference (DPO) data: `{instruction, input, chosen, rejected}` pairs, encoded and batched."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader

from lit_sft.data.base import BaseDataModule
from lit_sft.data.encoding import EncodedEntry, collate_instructions
from lit_sft.data.entries import Entry, load_entries
from lit_sft.data.synthetic import synthetic_entries
from lit_sft.prompts import PromptStyle
from lit_sft.tokenizer import END_OF_TEXT, IGNORE_INDEX, Tokenizer

PREFERENCE_FIELDS = ("instruction", "input", "chosen", "rejected")
BOOK_PREFERENCE_URL = (
    "https://raw.githubusercontent.com/rasbt/LLMs-from-scratch/main/ch07/"
    "04_preference-tuning-with-dpo/instruction-data-with-preference.json"
)


@dataclass(frozen=True)
class EncodedPair:
    """Pair `index` of its split: prompt + chosen and prompt + rejected, sharing the prompt."""

    index: int
    chosen: EncodedEntry
    rejected: EncodedEntry

    @property
    def tokens(self) -> list[int]:
        """The longer of the two sequences (what truncation is counted on)."""
        return max(self.chosen.tokens, self.rejected.tokens, key=len)

    @property
    def prompt_length(self) -> int:
        return self.chosen.prompt_length


def encode_pair(index: int, entry: Entry, style: PromptStyle, tokenizer: Tokenizer) -> EncodedPair:
    """Prompt and answers encoded separately, so the prompt's length (and the mask) is exact."""
    prompt = tokenizer.encode(style.prompt(entry))
    chosen, rejected = (tokenizer.encode(entry[key]) for key in ("chosen", "rejected"))
    return EncodedPair(
        index,
        EncodedEntry(prompt + chosen, len(prompt)),
        EncodedEntry(prompt + rejected, len(prompt)),
    )


def collate_preferences(
    batch: Sequence[EncodedPair],
    *,
    pad_id: int = END_OF_TEXT,
    ignore_index: int = IGNORE_INDEX,
    allowed_max_length: int | None = None,
) -> dict[str, Tensor]:
    """Rows chosen, rejected, chosen, rejected, ... padded and masked as SFT data with masking.

    Every target but the answer's tokens and its end-of-text is `ignore_index`: the prompt,
    response header included, and the padding. `pair_index` is each row's pair in its split.
    Worked example, one pair with prompt tokens [1, 2], chosen [3] and rejected [4, 5] (pad 0):

        input_ids  [[1, 2, 3, 0],      targets [[-100, 3, 0, -100],    pair_index [7, 7]
                    [1, 2, 4, 5]]               [-100, 4, 5,    0]]

    Interleaving keeps a pair together in any micro-batch of an even number of rows.
    """
    rows = [encoded for pair in batch for encoded in (pair.chosen, pair.rejected)]
    collated = collate_instructions(
        rows,
        pad_id=pad_id,
        ignore_index=ignore_index,
        mask_instructions=True,
        allowed_max_length=allowed_max_length,
    )
    collated["pair_index"] = torch.tensor([pair.index for pair in batch]).repeat_interleave(2)
    return collated


class PreferenceDataModule(BaseDataModule):
    """Loads, splits, encodes and batches a preference dataset in one prompt style.

    Its items are pairs (`EncodedPair`), batched as interleaved rows (`collate_preferences`);
    validation, errors and the train/test/validation split are those of instruction data;
    `path=None` takes the synthetic set's pairs.
    """

    # A sample answer is compared with the chosen one.
    reference_field = "chosen"

    def __init__(self, path: str | None = BOOK_PREFERENCE_URL, **options: Any) -> None:
        """`options`: `BaseDataModule`'s; prompts are always masked, pairs never packed."""
        super().__init__(path, **options)

    def entries(self) -> list[Entry]:
        entries = (
            synthetic_entries(self.synthetic_size, seed=self.seed)
            if self.path is None
            else load_entries(self.path, self.cache_dir, PREFERENCE_FIELDS, self.fields)
        )
        # Scoring an answer needs a reference; a preference entry's is its chosen answer.
        return [{**e, "output": e.get("output", e["chosen"])} for e in entries]

    def encode(self, entries: Sequence[Entry]) -> list[EncodedPair]:
        return [encode_pair(i, e, self.style, self.tokenizer) for i, e in enumerate(entries)]

    def collate(self) -> partial:
        return partial(collate_preferences, allowed_max_length=self.allowed_max_length)

    def pairs_loader(self, split: str) -> DataLoader:
        """The pairs of `split` in order, one batch at a time (for reference log-probabilities)."""
        return self._eval_loader(split)
