"""DataLoaders shared by every kind of data: a train loader that resumes mid-epoch, and
length-grouped batches."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Sampler


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

    def unfetch(self, batches: int) -> None:
        """Counts the last `batches` yielded as never trained on: a resumed run draws them again."""
        self._yielded -= batches

    def state_dict(self) -> dict[str, Any]:
        now = self.generator.get_state() if self.generator is not None else None
        return {"yielded": self._yielded, "rng_epoch_start": self._epoch_start_rng, "rng_now": now}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._resume_from = state


class LengthGroupedBatchSampler(Sampler[list[int]]):
    """Batches of similar lengths in a random order: little padding, still shuffled each epoch.

    Each epoch shuffles the entries, cuts the shuffle into buckets of `bucket_batches` batches,
    sorts each bucket by length (longest first) and cuts it into batches, then shuffles the
    batches. All of it draws from `generator`: give it the DataLoader's own, and a
    `ResumableDataLoader` rewinds it to replay an interrupted epoch exactly. As with
    `drop_last=True`, `len(lengths) % batch_size` entries sit out each epoch (the shortest of
    the last bucket).
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        generator: torch.Generator,
        bucket_batches: int = 16,
    ) -> None:
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.generator = generator
        self.bucket_size = batch_size * bucket_batches

    def __len__(self) -> int:
        return len(self.lengths) // self.batch_size

    def __iter__(self) -> Iterator[list[int]]:
        order = torch.randperm(len(self.lengths), generator=self.generator).tolist()
        grouped = []
        for start in range(0, len(order), self.bucket_size):
            bucket = order[start : start + self.bucket_size]
            grouped += sorted(bucket, key=lambda i: self.lengths[i], reverse=True)
        batches = [
            grouped[start : start + self.batch_size]
            for start in range(0, len(self) * self.batch_size, self.batch_size)
        ]
        for index in torch.randperm(len(batches), generator=self.generator).tolist():
            yield batches[index]
