"""Callbacks that make a run folder self-describing: `summary.json`, hparams, sample answers."""

from __future__ import annotations

import json
import resource
import time
from pathlib import Path
from typing import Any, Protocol

import lightning as L
import torch
from lightning.pytorch.callbacks import Checkpoint
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.exceptions import SIGTERMException

from lit_sft.data.loaders import ResumableDataLoader
from lit_sft.errors import UserError
from lit_sft.files import write_json_atomic
from lit_sft.generation import generate
from lit_sft.loggers import log_final, log_text
from lit_sft.lora import trainable_parameters
from lit_sft.prompts import SamplePrompt
from lit_sft.run_dir import RunDir
from lit_sft.tokenizer import IGNORE_INDEX, Tokenizer


def summary_metrics(pl_module: L.LightningModule) -> dict[str, str]:
    """summary.json's keys for a method's final metrics, and the logged names they come from."""
    return getattr(pl_module, "summary_metrics", {"train_loss": "train/loss"})


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory of this process: the CUDA allocator's on a GPU, else the resident set size."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def failure_summary(
    status: str, hparams: dict[str, Any], steps: int, error: BaseException
) -> dict[str, Any]:
    """summary.json of a run that stopped early: a user's mistake by its message, a bug by repr."""
    message = str(error) if isinstance(error, UserError) else repr(error)
    return {"status": status, **hparams, "steps": steps, "error": message}


class RunSummary(L.Callback):
    """Measures training throughput; `write` puts the final metrics in `summary.json` and loggers.

    Between the fit and `write` the caller may validate once more, so that the summary describes
    the final weights even when training ended between two validations.
    """

    def __init__(self, run_dir: str | Path, hparams: dict[str, Any]) -> None:
        self.run_dir = RunDir(run_dir)
        self.hparams = hparams
        self.tokens = 0
        self.target_tokens = 0
        self.train_time = 0.0
        self._step_start = 0.0
        self._fit_start = 0.0
        self.validated_step = -1  # the global step of the last validation
        self.fit_metrics: dict[str, float] = {}
        self.result: dict[str, Any] = {}  # what summary.json says, once the fit has ended

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._fit_start = time.perf_counter()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.validated_step = trainer.global_step

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # A validation after the fit replaces the callback metrics, train/loss with them.
        self.fit_metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}

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
        metrics = {**self.fit_metrics, **trainer.callback_metrics}
        datamodule = trainer.datamodule
        return {
            "status": "finished",
            **self.hparams,
            **{
                key: float(metrics[tag])
                for key, tag in summary_metrics(pl_module).items()
                if tag in metrics
            },
            "steps": trainer.global_step,
            "epochs": trainer.current_epoch,
            "tokens": self.tokens,
            "target_tokens": self.target_tokens,
            "train_tokens_per_sec": self.tokens / self.train_time if self.train_time else 0.0,
            "peak_memory_mb": peak_memory_mb(pl_module.device),
            "wall_time_s": time.perf_counter() - self._fit_start,
            "truncated_entries": dict(getattr(datamodule, "truncated", {})),
            "response_cut_entries": dict(getattr(datamodule, "response_cut", {})),
            "dropped_entries": dict(getattr(datamodule, "dropped", {})),
            "data_check": dict(getattr(datamodule, "data_check_summary", {})),
            "parameters": sum(p.numel() for p in pl_module.parameters()),
            "trainable_parameters": trainable_parameters(pl_module),
            "base_weights": getattr(pl_module, "base_weights", None),
        }

    def write(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        """Writes summary.json and the hparams with the final losses to every logger."""
        summary = self.result = self.summary(trainer, pl_module)
        if trainer.is_global_zero:
            write_json_atomic(self.run_dir.summary, summary)
            keys = summary_metrics(pl_module)
            final = {f"hparams/{key}": summary[key] for key in keys if key in summary}
            log_final(trainer.loggers, self.hparams, final, trainer.global_step)
        return summary

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, error: BaseException
    ) -> None:
        if trainer.is_global_zero:
            stopped = isinstance(error, (KeyboardInterrupt, SIGTERMException))
            status = "interrupted" if stopped else "failed"
            summary = failure_summary(status, self.hparams, trainer.global_step, error)
            write_json_atomic(self.run_dir.summary, summary)


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
        # Lightning saves at a batch's end, before counting that batch for the loggers' step, and
        # counts it on restart; here the last batch is counted already, so the saved count is
        # one less, or the resumed run's curves would skip a step.
        epoch_loop = trainer.fit_loop.epoch_loop
        epoch_loop._batches_that_stepped -= 1
        try:
            trainer.save_checkpoint(self.path)
        finally:
            epoch_loop._batches_that_stepped += 1

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        trainer.strategy.remove_checkpoint(self.path)


class ResumeCheckpoint(Checkpoint):
    """`checkpoints/last.ckpt`, the full state `ckpt_path=last` resumes from: every `every_minutes`
    of training (or every `every_n_train_steps` steps, if given) and when training ends.

    By time, not steps: writing gpt2-medium's ~5 GB of weights and AdamW state takes ~10 s on any
    machine, while its step takes ~17 s on 2 CPU cores and ~0.1 s on a GPU; every 50 steps cost
    the GPU more time than the training. SIGTERM, Ctrl-C and exceptions are InterruptedCheckpoint's.
    """

    def __init__(
        self,
        path: str | Path,
        every_minutes: float | None = 10.0,
        every_n_train_steps: int | None = None,
    ) -> None:
        self.path = Path(path)
        self.every_minutes = every_minutes
        self.every_n_train_steps = every_n_train_steps
        self._saved_at = time.monotonic()
        self._saved_step = -1

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._saved_at = time.monotonic()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        # Every rank must save together (a collective); rank 0's clock decides for all.
        if trainer.strategy.broadcast(self._due(trainer.global_step)):
            self._save(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._saved_step != trainer.global_step:  # not twice for a step ending on a save
            self._save(trainer)

    def _due(self, step: int) -> bool:
        if self.every_n_train_steps:
            return step % self.every_n_train_steps == 0
        if self.every_minutes is None:
            return False
        return time.monotonic() - self._saved_at >= 60 * self.every_minutes

    def _save(self, trainer: L.Trainer) -> None:
        trainer.save_checkpoint(self.path)
        self._saved_at, self._saved_step = time.monotonic(), trainer.global_step


class HasSamplePrompt(Protocol):
    def sample_prompt(self) -> SamplePrompt | None: ...


class SampleAnswer(L.Callback):
    """After every `every_n_validations`-th validation (the first included), answers the first
    validation prompt into the loggers and a file.

    The file, `samples.jsonl` in the run folder, holds one line per sample whatever the loggers;
    TensorBoard, wandb and MLflow show the answer as text too.
    """

    def __init__(self, max_new_tokens: int = 64, every_n_validations: int = 1) -> None:
        self.max_new_tokens = max_new_tokens
        self.every_n_validations = every_n_validations
        self.validations = 0
        self.tokenizer = Tokenizer()

    def state_dict(self) -> dict[str, Any]:
        return {"validations": self.validations}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.validations = state_dict["validations"]

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        datamodule: HasSamplePrompt | None = trainer.datamodule
        if trainer.sanity_checking:
            return
        self.validations += 1
        if (self.validations - 1) % self.every_n_validations or not trainer.is_global_zero:
            return
        sample = datamodule.sample_prompt() if datamodule is not None else None
        if sample is None:
            return
        tokens = generate(pl_module.model, [sample.tokens], max_new_tokens=self.max_new_tokens)
        answer, step = self.tokenizer.decode(tokens[0]), trainer.global_step
        prompt, reference = sample.text, sample.reference
        record = {"step": step, "prompt": prompt, "answer": answer, "reference": reference}
        with RunDir(trainer.default_root_dir).samples.open("a", encoding="utf-8") as file:
            file.write(json.dumps(record) + "\n")
        text = f"**Prompt:** {prompt}\n\n**Answer:** {answer}\n\n**Reference:** {reference}"
        log_text(trainer.loggers, "val/sample_answer", text, step)
