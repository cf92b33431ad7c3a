"""DataLoaders shared by every kind of data: a train loader that resumes mid-epoch."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from torch import Tensor
from torch.utils.data import DataLoader


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
