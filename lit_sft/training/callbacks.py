"""Callbacks that make a run folder self-describing: `summary.json`, hparams, sample answers."""

from __future__ import annotations

import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import lightning as L
import torch
from lightning.pytorch.callbacks import Checkpoint
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.exceptions import SIGTERMException

from lit_sft.data.loaders import ResumableDataLoader
from lit_sft.files import write_json_atomic
from lit_sft.generation import generate
from lit_sft.run_dir import RunDir
from lit_sft.tokenizer import IGNORE_INDEX, Tokenizer

SUMMARY_METRICS = {
    "train_loss": "train/loss",
    "val_loss": "val/loss",
    "val_response_loss": "val/response_loss",
}


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory of this process: the CUDA allocator's on a GPU, else the resident set size."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


class RunSummary(L.Callback):
    """Measures training throughput and writes `summary.json` (and hparams) when the fit ends."""

    def __init__(self, run_dir: str | Path, hparams: dict[str, Any]) -> None:
        self.run_dir = RunDir(run_dir)
        self.hparams = hparams
        self.tokens = 0
        self.target_tokens = 0
        self.train_time = 0.0
        self._step_start = 0.0
        self._fit_start = 0.0
        self.result: dict[str, Any] = {}  # what summary.json says, once the fit has ended

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._fit_start = time.perf_counter()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._step_start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.train_time += time.perf_counter() - self._step_start
        self.tokens += batch["input_ids"].numel() * trainer.world_size
        self.target_tokens += int((batch["targets"] != IGNORE_INDEX).sum()) * trainer.world_size

    def state_dict(self) -> dict[str, Any]:
        return {
            "tokens": self.tokens,
            "target_tokens": self.target_tokens,
            "train_time": self.train_time,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.tokens = state_dict["tokens"]
        self.target_tokens = state_dict["target_tokens"]
        self.train_time = state_dict["train_time"]

    def summary(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        """The run's final metrics and costs."""
        metrics = trainer.callback_metrics
        datamodule = trainer.datamodule
        return {
            "status": "finished",
            **self.hparams,
            **{key: float(metrics[tag]) for key, tag in SUMMARY_METRICS.items() if tag in metrics},
            "steps": trainer.global_step,
            "epochs": trainer.current_epoch,
            "tokens": self.tokens,
            "target_tokens": self.target_tokens,
            "train_tokens_per_sec": self.tokens / self.train_time if self.train_time else 0.0,
            "peak_memory_mb": peak_memory_mb(pl_module.device),
            "wall_time_s": time.perf_counter() - self._fit_start,
            "truncated_entries": dict(getattr(datamodule, "truncated", {})),
            "response_cut_entries": dict(getattr(datamodule, "response_cut", {})),
            "parameters": sum(p.numel() for p in pl_module.parameters()),
        }

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        summary = self.result = self.summary(trainer, pl_module)
        if not trainer.is_global_zero:
            return
        write_json_atomic(self.run_dir.summary, summary)
        if isinstance(trainer.logger, TensorBoardLogger):
            final = {f"hparams/{key}": summary[key] for key in SUMMARY_METRICS if key in summary}
            trainer.logger.log_hyperparams(self.hparams, final)

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, error: BaseException
    ) -> None:
        if trainer.is_global_zero:
            stopped = isinstance(error, (KeyboardInterrupt, SIGTERMException))
            status = "interrupted" if stopped else "failed"
            write_json_atomic(
                self.run_dir.summary,
                {
                    "status": status,
                    **self.hparams,
                    "steps": trainer.global_step,
                    "error": repr(error),
                },
            )


class InterruptedCheckpoint(Checkpoint):
    """Saves the run where an exception, Ctrl-C or SIGTERM stopped training, for `ckpt_path=last`.

    A batch fetched but not trained on when the run stopped goes back to the loader, so the resumed
    run trains on it instead of skipping it. The file is deleted when a run finishes. Not
    Lightning's OnExceptionCheckpoint: with one, `fit` resumes even when `ckpt_path` is None.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        if trainer.state.fn != TrainerFn.FITTING:
            return
        progress = trainer.fit_loop.epoch_loop.batch_progress.current
        loader = trainer.train_dataloader
        unfinished = progress.ready - progress.processed
        if isinstance(loader, ResumableDataLoader) and unfinished:
            loader.unfetch(unfinished)
        trainer.save_checkpoint(self.path)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        trainer.strategy.remove_checkpoint(self.path)


@dataclass(frozen=True)
class SamplePrompt:
    """A validation prompt to answer while training: its text, tokens and reference answer."""

    text: str
    tokens: list[int]
    reference: str


class HasSamplePrompt(Protocol):
    def sample_prompt(self) -> SamplePrompt | None: ...


class SampleAnswer(L.Callback):
    """After each validation, answers the first validation prompt and logs it as text."""

    def __init__(self, max_new_tokens: int = 64) -> None:
        self.max_new_tokens = max_new_tokens
        self.tokenizer = Tokenizer()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        datamodule: HasSamplePrompt | None = trainer.datamodule
        add_text = getattr(getattr(trainer.logger, "experiment", None), "add_text", None)
        if trainer.sanity_checking or not trainer.is_global_zero or add_text is None:
            return
        sample = datamodule.sample_prompt() if datamodule is not None else None
        if sample is None:
            return
        answer = generate(pl_module.model, [sample.tokens], max_new_tokens=self.max_new_tokens)
        add_text(
            "val/sample_answer",
            f"**Prompt:** {sample.text}\n\n**Answer:** {self.tokenizer.decode(answer[0])}\n\n"
            f"**Reference:** {sample.reference}",
            trainer.global_step,
        )
