"""Instruction data: loading, validation, splitting, encoding, the collate and the DataModule."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import lightning as L
import requests
import tiktoken
import torch
from torch import Tensor
from torch.utils.data import DataLoader, DistributedSampler

from lit_sft import prompts
from lit_sft.files import cache_root
from lit_sft.prompts import PromptStyle
from lit_sft.synthetic import synthetic_entries

log = logging.getLogger(__name__)

END_OF_TEXT = 50256
IGNORE_INDEX = -100
BOOK_DATA_URL = (
    "https://raw.githubusercontent.com/rasbt/LLMs-from-scratch/main/ch07/01_main-chapter-code/"
    "instruction-data.json"
)

Entry = dict[str, str]


@dataclass(frozen=True)
class EncodedEntry:
    """The token ids of prompt + response; the first `prompt_length` of them are the prompt."""

    tokens: list[int]
    prompt_length: int


def download_once(url: str, cache_dir: str | Path | None = None, timeout_s: float = 60.0) -> Path:
    """The local copy of `url`, downloaded on first use and written atomically."""
    folder = Path(cache_dir) if cache_dir is not None else cache_root() / "data"
    digest = hashlib.sha256(url.encode()).hexdigest()[:16]
    target = folder / f"{digest}-{Path(url.split('?')[0]).name or 'data'}"
    if target.exists():
        return target
    try:
        response = requests.get(url, timeout=timeout_s)
        response.raise_for_status()
    except requests.RequestException as error:
        raise RuntimeError(
            f"could not download {url} ({error}); "
            "pass a local file instead: data.path=/path/to/data.json"
        ) from error
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=folder, delete=False, suffix=".part") as tmp:
        tmp.write(response.content)
    os.replace(tmp.name, target)
    return target


def parse_entries(text: str, source: str) -> list:
    """The entries of a JSON list or of JSON Lines text."""
    if not text.strip():
        raise ValueError(f"{source}: the file is empty")
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        data = []
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    data.append(json.loads(line))
                except json.JSONDecodeError as error:
                    raise ValueError(
                        f"{source}: neither a JSON list nor JSON Lines (line {number}: {error.msg})"
                    ) from None
    if not isinstance(data, list):
        raise ValueError(f"{source}: expected a list of entries, got a JSON {type(data).__name__}")
    return data


def validate_entries(entries: Sequence, source: str) -> list[Entry]:
    """The entries with `input` defaulted to "", after checking each field of each entry."""
    if not entries:
        raise ValueError(f"{source}: no entries")
    valid = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise ValueError(f"{source}: entry {index} is a {type(entry).__name__}, not an object")
        for field in ("instruction", "input", "output"):
            if field not in entry:
                if field == "input":
                    continue
                raise ValueError(f"{source}: entry {index} has no field {field!r}")
            if not isinstance(entry[field], str):
                raise ValueError(
                    f"{source}: entry {index} field {field!r} must be a string, "
                    f"got {type(entry[field]).__name__}"
                )
        valid.append({**entry, "input": entry.get("input", "")})
    return valid


def load_entries(path: str, cache_dir: str | Path | None = None) -> list[Entry]:
    """The validated entries of a local JSON/JSONL file or of an http(s) URL."""
    local = (
        download_once(path, cache_dir) if path.startswith(("http://", "https://")) else Path(path)
    )
    if not local.is_file():
        raise FileNotFoundError(f"dataset file {path} does not exist")
    return validate_entries(parse_entries(local.read_text(encoding="utf-8"), path), path)


def split_entries(
    entries: Sequence[Entry], train_fraction: float = 0.85, test_fraction: float = 0.10
) -> tuple[list[Entry], list[Entry], list[Entry]]:
    """Train, test and validation entries, in file order (as the book splits them)."""
    train_end = int(len(entries) * train_fraction)
    test_end = train_end + int(len(entries) * test_fraction)
    return list(entries[:train_end]), list(entries[train_end:test_end]), list(entries[test_end:])


def encode_entry(entry: Entry, style: PromptStyle, tokenizer: tiktoken.Encoding) -> EncodedEntry:
    """Prompt and response encoded separately, so the prompt's length (and the mask) is exact."""
    allowed = {"<|endoftext|>"}
    prompt = tokenizer.encode(style.prompt(entry), allowed_special=allowed)
    response = tokenizer.encode(entry["output"], allowed_special=allowed)
    return EncodedEntry(prompt + response, len(prompt))


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


class ResumableDataLoader(DataLoader):
    """A DataLoader that Lightning checkpoints mid-epoch, so a resumed run continues the same order.

    Lightning saves `state_dict()` with each checkpoint and calls `load_state_dict()` before the
    resumed run iterates; the next epoch then skips the batches already trained on, drawn from the
    same shuffle.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._yielded = 0
        self._epoch_start_rng: Tensor | None = None
        self._resume_from: dict[str, Any] | None = None

    def __iter__(self) -> Iterator[Any]:
        skip = self._restore()
        self._epoch_start_rng = self.generator.get_state() if self.generator is not None else None
        self._yielded = skip
        batches = super().__iter__()
        for _ in range(skip):
            next(batches)
        for batch in batches:
            self._yielded += 1
            yield batch

    def _restore(self) -> int:
        """Rewinds the shuffle to where the checkpoint left it; returns the batches to skip."""
        state, self._resume_from = self._resume_from, None
        if state is None:
            return 0
        finished = state["yielded"] >= len(self)
        rng = state["rng_now"] if finished else state["rng_epoch_start"]
        if self.generator is not None and rng is not None:
            self.generator.set_state(rng)
        return 0 if finished else state["yielded"]

    def state_dict(self) -> dict[str, Any]:
        now = self.generator.get_state() if self.generator is not None else None
        return {"yielded": self._yielded, "rng_epoch_start": self._epoch_start_rng, "rng_now": now}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._resume_from = state


class InstructionDataModule(L.LightningDataModule):
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
        num_workers: int = 0,
        seed: int = 123,
        synthetic_size: int = 2000,
        cache_dir: str | None = None,
    ) -> None:
        """`path`: a JSON/JSONL file or URL; None generates `synthetic_size` synthetic entries."""
        super().__init__()
        self.path = path
        self.style = prompts.prompt_style(prompt_style)
        self.batch_size = batch_size
        self.mask_instructions = mask_instructions
        self.allowed_max_length = allowed_max_length
        self.fractions = (train_fraction, test_fraction)
        self.shuffle = shuffle
        self.num_workers = num_workers
        self.seed = seed
        self.synthetic_size = synthetic_size
        self.cache_dir = cache_dir
        self.tokenizer = tiktoken.get_encoding("gpt2")
        self.splits: dict[str, list[Entry]] = {}
        self.encoded: dict[str, list[EncodedEntry]] = {}
        self.truncated: dict[str, int] = {}
        self.response_cut: dict[str, int] = {}

    def prepare_data(self) -> None:
        if self.path is not None and self.path.startswith(("http://", "https://")):
            download_once(self.path, self.cache_dir)

    def entries(self) -> list[Entry]:
        """All entries of the dataset, before the split."""
        if self.path is None:
            return synthetic_entries(self.synthetic_size, seed=self.seed)
        return load_entries(self.path, self.cache_dir)

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        train, test, val = split_entries(self.entries(), *self.fractions)
        self.splits = {"train": train, "val": val, "test": test}
        for name, entries in self.splits.items():
            self.encoded[name] = [encode_entry(e, self.style, self.tokenizer) for e in entries]
            self._count_truncation(name)

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

    def collate(self) -> partial:
        """The collate function with this DataModule's masking and truncation."""
        return partial(
            collate_instructions,
            mask_instructions=self.mask_instructions,
            allowed_max_length=self.allowed_max_length,
        )

    def train_dataloader(self) -> DataLoader:
        sampler = self._distributed_sampler()
        return ResumableDataLoader(
            self.encoded["train"],
            batch_size=self.batch_size,
            sampler=sampler,
            shuffle=self.shuffle if sampler is None else None,
            drop_last=True,
            collate_fn=self.collate(),
            num_workers=self.num_workers,
            generator=torch.Generator().manual_seed(self.seed),
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
        return DataLoader(
            self.encoded[split],
            batch_size=self.batch_size,
            shuffle=False,
            collate_fn=self.collate(),
            num_workers=self.num_workers,
        )
