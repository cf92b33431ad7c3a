"""Callbacks tests add to real runs (`+callbacks.NAME._target_=tests.helpers.callbacks.X`)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import lightning as L


class BatchLog(L.Callback):
    """Appends `[step, row sums of input_ids, tokens, target tokens]` for every batch trained on
    to a JSON-lines file; with `rows`, the input_ids rows themselves too. With `per_rank`, each
    process writes its own file: `batches.jsonl` becomes `batches.rank0.jsonl`, ..."""

    def __init__(self, path: str, rows: bool = False, per_rank: bool = False) -> None:
        self.path = Path(path)
        self.rows = rows
        self.per_rank = per_rank

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        ids = batch["input_ids"]
        targets = int((batch["targets"] != -100).sum())
        record = [trainer.global_step, ids.sum(dim=1).tolist(), ids.numel(), targets]
        if self.rows:
            record.append(ids.tolist())
        path = self.path
        if self.per_rank:
            path = path.with_name(f"{path.stem}.rank{trainer.global_rank}{path.suffix}")
        with path.open("a") as f:
            f.write(json.dumps(record) + "\n")


class StepOutputs(L.Callback):
    """Appends `[step, the loss training_step returned, the progress bar's metric names]` to a
    JSON-lines file after every step."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        record = [trainer.global_step, float(outputs["loss"]), sorted(trainer.progress_bar_metrics)]
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")


def read_batch_log(path: Path) -> list[list]:
    return [json.loads(line) for line in path.read_text().splitlines()]


class CrashAt(L.Callback):
    """Raises at the start of step `step`, after its batch was fetched, as a failing step would."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            raise RuntimeError(f"simulated crash at step {self.step}")


class WaitForSigtermAt(L.Callback):
    """After step `step`, writes `ready_file`, then waits (60 s at most) for the test's SIGTERM.

    Waiting makes the step the signal lands on exact; the signal itself goes through Lightning's
    own handler, as a SLURM pre-emption's would.
    """

    def __init__(self, step: int, ready_file: str) -> None:
        self.step = step
        self.ready_file = Path(ready_file)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step != self.step:
            return
        self.ready_file.write_text(str(self.step))
        deadline = time.monotonic() + 60
        while not trainer.received_sigterm and time.monotonic() < deadline:
            time.sleep(0.05)


class ForwardRows(L.Callback):
    """Appends the row count of every training pass through the model's token embedding to a
    JSON-lines file (micro-batches show as several passes of fewer rows)."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def on_fit_start(self, trainer, pl_module) -> None:
        def record(model, args, output) -> None:
            if model.training:
                with self.path.open("a") as f:
                    f.write(json.dumps(args[0].shape[0]) + "\n")

        pl_module.model.tok_emb.register_forward_hook(record)
