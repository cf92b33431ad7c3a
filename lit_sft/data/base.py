"""The DataModule every data format builds on: load → split → encode → loaders.

A format (`InstructionDataModule`, `PreferenceDataModule`) declares how its entries are read
(`entries`), encoded (`encode`: items with `tokens` and `prompt_length`) and batched (`collate`);
the base splits them, counts and handles overlong entries, and builds resumable, distributed and
length-grouped loaders.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, DistributedSampler

from lit_sft import prompts
from lit_sft.data.check import (
    DEDUP,
    DataCheck,
    check_splits,
    check_summary,
    dedup_train,
    pair_records,
)
from lit_sft.data.entries import Entry, check_split_sizes, split_entries
from lit_sft.data.loaders import LengthGroupedBatchSampler, ResumableDataLoader
from lit_sft.errors import InvalidInput
from lit_sft.hub import is_remote, local_copy
from lit_sft.prompts import SamplePrompt
from lit_sft.tokenizer import Tokenizer

log = logging.getLogger(__name__)

OVERLENGTH = ("truncate", "drop")


class Encoded(Protocol):
    """What a format's encoded item offers: its longest token ids and the prompt's length."""

    @property
    def tokens(self) -> list[int]: ...

    @property
    def prompt_length(self) -> int: ...


Collate = Callable[[Sequence[Any]], dict[str, Tensor]]


class BaseDataModule(L.LightningDataModule):
    """Loads, splits, encodes and batches a dataset in one prompt style."""

    # The entry field a sample answer is compared with.
    reference_field = "output"

    def __init__(
        self,
        path: str | None,
        prompt_style: str = "alpaca",
        batch_size: int = 8,
        allowed_max_length: int = 1024,
        train_fraction: float = 0.85,
        test_fraction: float = 0.10,
        shuffle: bool = True,
        group_by_length: bool = False,
        num_workers: int = 0,
        seed: int = 123,
        synthetic_size: int = 2000,
        cache_dir: str | None = None,
        overlength: str = "truncate",
        max_train_entries: int | None = None,
        dedup: str = "none",
        fields: dict[str, str | None] | None = None,
    ) -> None:
        """`path`: a JSON/JSONL file or URL; None generates `synthetic_size` synthetic entries.

        `fields`: lit_sft's field names mapped to the file's (`{"instruction": "question"}`;
        None: the same name).

        Train entries longer than `allowed_max_length` are truncated (the book) or, with
        `overlength="drop"`, left out; `max_train_entries` keeps the first N train entries.
        `dedup` (exact, near; none keeps all): the train split without its duplicates and its
        copies of validation / test entries (`lit_sft.data.check`), which every setup counts.
        `group_by_length`: shuffled train batches of similar lengths (`LengthGroupedBatchSampler`).
        """
        super().__init__()
        if overlength not in OVERLENGTH:
            raise InvalidInput(f"data.overlength={overlength!r}: expected one of {OVERLENGTH}")
        if dedup not in DEDUP:
            raise InvalidInput(f"data.dedup={dedup!r}: expected one of {', '.join(DEDUP)}")
        if max_train_entries is not None and max_train_entries < 1:
            raise InvalidInput(
                f"data.max_train_entries={max_train_entries}: expected N >= 1 or null"
            )
        self.path = path
        self.style = prompts.prompt_style(prompt_style)
        self.batch_size = batch_size
        self.allowed_max_length = allowed_max_length
        self.fractions = (train_fraction, test_fraction)
        self.shuffle = shuffle
        self.group_by_length = group_by_length
        self.num_workers = num_workers
        self.seed = seed
        self.synthetic_size = synthetic_size
        self.cache_dir = cache_dir
        self.overlength = overlength
        self.max_train_entries = max_train_entries
        self.dedup = dedup
        self.data_check: DataCheck | None = None
        self.data_check_summary: dict[str, Any] = {}
        self.data_check_pairs: list[dict[str, Any]] = []
        self.fields = {ours: theirs for ours, theirs in (fields or {}).items() if theirs}
        self.tokenizer = Tokenizer()
        self.splits: dict[str, list[Entry]] = {}
        self.encoded: dict[str, list[Encoded]] = {}
        self.truncated: dict[str, int] = {}
        self.response_cut: dict[str, int] = {}
        self.dropped: dict[str, int] = {}

    # What a format declares.
    def entries(self) -> list[Entry]:
        """All entries of the dataset, before the split."""
        raise NotImplementedError

    def encode(self, entries: Sequence[Entry]) -> list[Encoded]:
        """The token ids of `entries` in this DataModule's prompt style."""
        raise NotImplementedError

    def collate(self) -> Collate:
        """The collate function of validation and test batches (and train, unless overridden)."""
        raise NotImplementedError

    def train_collate(self) -> Collate:
        return self.collate()

    # Shared by every format.
    def prepare_data(self) -> None:
        if self.path is not None and is_remote(self.path):
            local_copy(self.path, self.cache_dir)

    def setup(self, stage: str | None = None) -> None:
        if not self.splits:
            train, test, val = split_entries(self.entries(), *self.fractions)
            # Evaluating (stage "test") needs no check of a train split it never reads.
            if stage in (None, "fit") or self.dedup != "none":
                train = self._checked_train({"train": train, "val": val, "test": test})
            self.splits = {"train": self._first_train_entries(train), "val": val, "test": test}
            for name, entries in self.splits.items():
                self.encoded[name] = self.encode(entries)
                if name == "train" and self.overlength == "drop":
                    self._drop_overlength_train()
                self._count_truncation(name)
        world_size = self.trainer.world_size if self.trainer is not None else 1
        source = self.path or "the synthetic set"
        check_split_sizes(self.splits, stage, self.batch_size, world_size, source)

    def _checked_train(self, splits: dict[str, list[Entry]]) -> list[Entry]:
        """The train split after the duplicate check (without what `dedup` drops)."""
        self.data_check = check_splits(splits)
        train, dropped = dedup_train(splits, self.dedup, self.data_check)
        self.data_check_summary = check_summary(self.data_check, self.dedup, dropped)
        self.data_check_pairs = pair_records(self.data_check, splits)
        return train

    def _first_train_entries(self, train: list[Entry]) -> list[Entry]:
        limit = self.max_train_entries
        if limit is None:
            return train
        if limit > len(train):
            raise InvalidInput(
                f"data.max_train_entries={limit} but the train split has only {len(train)} "
                "entries; pass at most that many, or null for all"
            )
        return train[:limit]

    def _drop_overlength_train(self) -> None:
        # Validation and test keep every entry, so their losses and scores compare across choices.
        keep = [len(e.tokens) <= self.allowed_max_length for e in self.encoded["train"]]
        self.dropped["train"] = keep.count(False)
        self.splits["train"] = [e for e, k in zip(self.splits["train"], keep, strict=True) if k]
        self.encoded["train"] = [e for e, k in zip(self.encoded["train"], keep, strict=True) if k]
        log.info(
            "dropped %d train entries longer than allowed_max_length=%d (data.overlength=drop)",
            self.dropped["train"],
            self.allowed_max_length,
        )
        if not self.encoded["train"]:
            raise InvalidInput(
                f"every train entry is longer than data.allowed_max_length="
                f"{self.allowed_max_length}; raise it or use data.overlength=truncate"
            )

    def _count_truncation(self, split: str) -> None:
        encoded, limit = self.encoded[split], self.allowed_max_length
        self.truncated[split] = sum(len(e.tokens) > limit for e in encoded)
        # An entry whose prompt fills the limit keeps no response target at all.
        self.response_cut[split] = sum(e.prompt_length - 1 >= limit for e in encoded)
        if self.truncated[split]:
            log.warning(
                "%d of %d %s entries are longer than allowed_max_length=%d and get truncated "
                "(%d of them lose their whole response)",
                self.truncated[split],
                len(encoded),
                split,
                limit,
                self.response_cut[split],
            )

    def sample_prompt(self) -> SamplePrompt | None:
        """The first validation entry's prompt, for a sample answer while training."""
        if not self.encoded.get("val"):
            return None
        entry, encoded = self.splits["val"][0], self.encoded["val"][0]
        prompt = encoded.tokens[: encoded.prompt_length]
        return SamplePrompt(self.style.prompt(entry), prompt, entry[self.reference_field])

    def train_dataloader(self) -> DataLoader:
        if self.group_by_length:
            return self._length_grouped_loader()
        sampler = self._distributed_sampler()
        return ResumableDataLoader(
            self.encoded["train"],
            batch_size=self.batch_size,
            sampler=sampler,
            shuffle=self.shuffle if sampler is None else None,
            drop_last=True,
            collate_fn=self.train_collate(),
            num_workers=self.num_workers,
            generator=torch.Generator().manual_seed(self.seed),
        )

    def _length_grouped_loader(self) -> DataLoader:
        if self._distributed_sampler() is not None or not self.shuffle:
            raise InvalidInput(
                "data.group_by_length=true needs data.shuffle=true and a single process; "
                "drop it for data.shuffle=false or a multi-device trainer"
            )
        generator = torch.Generator().manual_seed(self.seed)
        lengths = [min(len(e.tokens), self.allowed_max_length) for e in self.encoded["train"]]
        return ResumableDataLoader(
            self.encoded["train"],
            batch_sampler=LengthGroupedBatchSampler(lengths, self.batch_size, generator),
            collate_fn=self.train_collate(),
            num_workers=self.num_workers,
            generator=generator,
        )

    def _distributed_sampler(self) -> DistributedSampler | None:
        # Lightning's own distributed sampler always shuffles the train set; ours keeps
        # `shuffle=False` meaning file order on any number of processes.
        trainer = self.trainer
        if trainer is None or trainer.world_size == 1:
            return None
        return DistributedSampler(
            self.encoded["train"],
            num_replicas=trainer.world_size,
            rank=trainer.global_rank,
            shuffle=self.shuffle,
            seed=self.seed,
        )

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")

    def _eval_loader(self, split: str) -> DataLoader:
        # A generator of its own: without one, each pass draws its worker seed from the global
        # generator, so validating would change the dropout of the steps after it.
        return DataLoader(
            self.encoded[split],
            batch_size=self.batch_size,
            shuffle=False,
            collate_fn=self.collate(),
            num_workers=self.num_workers,
            generator=torch.Generator().manual_seed(self.seed),
        )
