"""The LightningModule every training method builds on: the model, AdamW and its schedule, the
optimizer step (micro-batches, accumulation, clipping), validation totals, checkpoints.

A method (`SFTModule`, `DPOModule`) declares only what it measures:

- `metrics`: names logged as `train/<name>`, means over the batch; the first is the loss;
- `val_metrics`: names logged as `val/<name>`, means over the whole validation;
- `rows_per_example`: batch rows that belong together (2: a preference pair's two answers);
- `batch_weight(batch)`: what a train batch's loss is a mean over (target tokens, pairs);
- `train_sums(batch)`: a (micro-)batch's summed loss, to backpropagate, and the sums of `metrics`;
- `val_sums(batch)`: the sums of `val_metrics` over a batch, and what each is a mean over.

Accumulating N batches is one optimizer step on the mean over all their tokens (pairs), on every
rank: the gradient of one batch holding the N batches' rows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import lightning as L
import torch
from torch import Tensor
from torch.optim.lr_scheduler import LambdaLR

from lit_sft.errors import InvalidInput
from lit_sft.lora import adapter_config, check_adapter_checkpoint, has_adapters
from lit_sft.model import GPT, GPTConfig
from lit_sft.training.losses import Batch
from lit_sft.training.schedules import check_schedule, optimizer_steps, warmup_cosine
from lit_sft.training.steps import backward_sums

CLIP_ALGORITHMS = ("norm", "value")


def check_optimization(gradient_clip_algorithm: str, accumulate_grad_batches: int) -> None:
    """Refuses an unknown clipping algorithm and an accumulation below one batch."""
    if gradient_clip_algorithm not in CLIP_ALGORITHMS:
        raise InvalidInput(
            f"unknown gradient_clip_algorithm {gradient_clip_algorithm!r} (module. or trainer."
            f"gradient_clip_algorithm); choose one of {', '.join(CLIP_ALGORITHMS)}"
        )
    if accumulate_grad_batches < 1:
        raise InvalidInput(
            f"accumulate_grad_batches={accumulate_grad_batches} (module. or trainer."
            "accumulate_grad_batches): expected a number of batches >= 1"
        )


class TrainingModule(L.LightningModule):
    """GPT-2 trained with AdamW under manual optimization; subclasses declare their metrics."""

    metrics: tuple[str, ...] = ("loss",)
    val_metrics: tuple[str, ...] = ("loss",)
    rows_per_example = 1
    # What the progress bar shows, of the metrics logged.
    progress_bar: tuple[str, ...] = ("train/loss",)

    def __init__(
        self,
        model_config: dict[str, Any],
        lr: float = 5e-5,
        weight_decay: float = 0.1,
        betas: tuple[float, float] = (0.9, 0.999),
        micro_batch_size: int | None = None,
        grad_clip: float | None = None,
        gradient_clip_algorithm: str = "norm",
        accumulate_grad_batches: int = 1,
        lr_schedule: str = "constant",
        warmup_steps: int = 0,
        min_lr_ratio: float = 0.1,
        compile: bool = False,
        activation_checkpointing: bool = False,
    ) -> None:
        """`micro_batch_size`: examples per forward/backward pass (None: the whole batch);
        `accumulate_grad_batches`: batches per optimizer step (Lightning's knob of that name);
        `grad_clip` with `gradient_clip_algorithm`: the clipping of Lightning's
        `gradient_clip_val`; `activation_checkpointing` recomputes each block in backward
        instead of keeping its activations."""
        super().__init__()
        check_schedule(lr_schedule)
        check_optimization(gradient_clip_algorithm, accumulate_grad_batches)
        self.save_hyperparameters()
        # Optimisation is manual so that every target token (pair) weighs the same, whatever
        # micro-batch or accumulated batch it lands in.
        self.automatic_optimization = False
        self.model = GPT(GPTConfig(**model_config))
        self.model.activation_checkpointing = activation_checkpointing
        # Per validation metric: its sum over the validation so far, and what it is a mean over.
        self.val_totals = torch.zeros(2 * len(self.val_metrics))
        self.tokens_seen = 0
        # The weights the model started from, recorded in checkpoints: a LoRA checkpoint holds
        # only the adapters, and a resumed run must rebuild the same base under them.
        self.base_weights: str | None = None
        # The optimizer step being accumulated: its batches so far and their global weight.
        self._accumulated = 0
        self._group_weight = torch.zeros(())
        self._saved_grads: dict[str, Tensor] = {}

    @property
    def summary_metrics(self) -> dict[str, str]:
        """summary.json's keys for the final metrics, and the logged names they come from."""
        names = {"train_loss": "train/loss"}
        for name in self.val_metrics:
            names[f"val_{name.replace('/', '_')}"] = f"val/{name}"
        return names

    # What a method declares.
    def batch_weight(self, batch: Batch) -> Tensor:
        """What a train batch's loss is a mean over (a scalar)."""
        raise NotImplementedError

    def train_sums(self, batch: Batch) -> tuple[Tensor, Tensor]:
        """A (micro-)batch's summed loss, to backpropagate, and the detached sums of `metrics`."""
        raise NotImplementedError

    def val_sums(self, batch: Batch) -> tuple[Tensor, Tensor]:
        """The sums of `val_metrics` over a batch, and what each of them is a mean over."""
        raise NotImplementedError

    # Shared by every method.
    def configure_model(self) -> None:
        if self.hparams.compile:
            for block in self.model.blocks:
                block.compile(dynamic=True)

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        # The fused kernel beats the per-tensor loop PyTorch otherwise uses on CPUs (~1.5x here).
        # Frozen base weights (LoRA) get neither gradients nor AdamW state. Every parameter is
        # decayed, as in the book's recipe.
        optimizer = torch.optim.AdamW(
            [p for p in self.model.parameters() if p.requires_grad],
            lr=hp.lr,
            weight_decay=hp.weight_decay,
            betas=tuple(hp.betas),
            fused=self.device.type in ("cpu", "cuda"),
        )

        def multiplier(step: int) -> float:
            if hp.lr_schedule == "constant":
                return 1.0
            # Asked lazily: estimating the total before training would build the train dataloader
            # before a resumed run has restored its position in the epoch.
            if step > hp.warmup_steps:
                total = optimizer_steps(self.trainer, hp.accumulate_grad_batches)
            else:
                total = step + 1
            return warmup_cosine(step, hp.warmup_steps, int(total), hp.min_lr_ratio)

        return {"optimizer": optimizer, "lr_scheduler": LambdaLR(optimizer, multiplier)}

    def backward_sums(
        self,
        batch: Batch,
        scale: Tensor | float,
        backward: Callable[[Tensor], None] = Tensor.backward,
    ) -> Tensor:
        """Accumulates the gradient of `scale` x the summed loss, one micro-batch at a time;
        returns the (detached) sums of `metrics`."""
        size = self.hparams.micro_batch_size
        rows = size * self.rows_per_example if size else None
        return backward_sums(batch, rows, self.train_sums, scale, backward)

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        optimizer, scheduler = self.optimizers(), self.lr_schedulers()
        strategy, world_size = self.trainer.strategy, self.trainer.world_size
        weight = strategy.reduce(self.batch_weight(batch).float(), reduce_op="sum")
        if self._accumulated == 0:
            optimizer.zero_grad()
            self._group_weight = torch.zeros((), device=self.device)
        # DDP averages gradients over ranks, so world_size / the global weight makes one batch's
        # gradient the mean over all its tokens (pairs). Accumulating, the group's weight is known
        # at its last batch only: the gradients of the sums are divided by it then.
        if self.hparams.accumulate_grad_batches == 1:
            scale: Tensor | int = world_size / weight.clamp(min=1)
        else:
            scale = world_size
        sums = self.backward_sums(batch, scale, self.manual_backward)
        self._accumulated += 1
        self._group_weight = self._group_weight + weight
        if self._group_complete(batch_idx):
            self._optimizer_step(optimizer, scheduler)
        means = strategy.reduce(sums, reduce_op="sum") / weight.clamp(min=1)
        self.tokens_seen += batch["input_ids"].numel() * world_size
        self._log_metrics("train", means, prog_bar=True)
        self.log("train/tokens_seen", float(self.tokens_seen))
        self.log("train/lr", scheduler.get_last_lr()[0])
        return means[0]

    def _group_complete(self, batch_idx: int) -> bool:
        """Whether this batch ends an optimizer step: the Nth of its group or the epoch's last."""
        trainer = self.trainer
        return (
            self._accumulated >= self.hparams.accumulate_grad_batches
            or trainer.is_last_batch
            or batch_idx + 1 >= trainer.num_training_batches
        )

    def _optimizer_step(self, optimizer: Any, scheduler: Any) -> None:
        weight, self._accumulated = self._group_weight, 0
        if self.hparams.accumulate_grad_batches > 1:
            for p in self.parameters():
                if p.grad is not None:
                    p.grad.div_(weight.clamp(min=1))
        if weight > 0:  # a global group without any target token leaves the weights alone
            self._clip_gradients()
            optimizer.step()
        scheduler.step()

    def on_validation_model_zero_grad(self) -> None:
        # Lightning frees the gradients before validating; between the batches of one optimizer
        # step they are the step's, kept.
        if not self._accumulated:
            super().on_validation_model_zero_grad()

    def _clip_gradients(self) -> None:
        hp = self.hparams
        if hp.grad_clip:
            self.clip_gradients(
                self.optimizers(),
                gradient_clip_val=hp.grad_clip,
                gradient_clip_algorithm=hp.gradient_clip_algorithm,
            )

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        sums, weights = self.val_sums(batch)
        totals = torch.stack([sums, weights.to(sums.dtype)], dim=1).flatten()
        self.val_totals += totals.to(self.val_totals)

    def on_validation_epoch_start(self) -> None:
        self.val_totals = torch.zeros(
            2 * len(self.val_metrics), dtype=torch.float64, device=self.device
        )

    def on_validation_epoch_end(self) -> None:
        totals = self.trainer.strategy.reduce(self.val_totals, reduce_op="sum").view(-1, 2)
        # Weighted over every batch validated, not a mean of per-batch means.
        self._log_metrics("val", totals[:, 0] / totals[:, 1].clamp(min=1), prog_bar=True)

    def _log_metrics(self, split: str, means: Tensor, prog_bar: bool = False) -> None:
        """Logs `means` under `split`'s metric names; with `prog_bar`, those in `progress_bar`
        go to the progress bar too."""
        names = self.metrics if split == "train" else self.val_metrics
        for name, value in zip(names, means, strict=True):
            tag = f"{split}/{name}"
            self.log(tag, value.float(), prog_bar=prog_bar and tag in self.progress_bar)

    def trainable_state_names(self) -> set[str]:
        return {f"model.{name}" for name, p in self.model.named_parameters() if p.requires_grad}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["tokens_seen"] = self.tokens_seen
        checkpoint["base_weights"] = self.base_weights
        # Adapter dropout draws from the global generator; restoring it makes a resume exact.
        checkpoint["torch_rng_state"] = torch.get_rng_state()
        if self._accumulated:  # saved between two batches of one optimizer step
            checkpoint["accumulation"] = {
                "batches": self._accumulated,
                "weight": self._group_weight.cpu(),
                "grads": {n: p.grad for n, p in self.named_parameters() if p.grad is not None},
            }
        if has_adapters(self.model):
            checkpoint["adapter"] = asdict(adapter_config(self.model))
            trainable = self.trainable_state_names()
            state = checkpoint["state_dict"]
            checkpoint["state_dict"] = {k: v for k, v in state.items() if k in trainable}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.tokens_seen = checkpoint.get("tokens_seen", 0)
        if "torch_rng_state" in checkpoint:
            torch.set_rng_state(checkpoint["torch_rng_state"])
        self._restore_accumulation(checkpoint.get("accumulation"))
        if not has_adapters(self.model):
            return
        check_adapter_checkpoint(checkpoint, self.base_weights, self.trainable_state_names())
        # The frozen base came from `base_weights`, not from the checkpoint.
        self.strict_loading = False

    def _restore_accumulation(self, state: dict[str, Any] | None) -> None:
        """Where a checkpoint left a half-accumulated optimizer step; its gradients go back on
        the parameters at `on_train_start` (Lightning zeroes them on the way)."""
        if state is None:
            return
        self._accumulated = state["batches"]
        self._group_weight = state["weight"].to(self.device)
        self._saved_grads = state["grads"]

    def on_train_start(self) -> None:
        parameters = dict(self.named_parameters())
        for name, grad in self._saved_grads.items():
            parameters[name].grad = grad.to(parameters[name].device)
        self._saved_grads = {}
