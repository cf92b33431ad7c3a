"""The LightningModule: token-weighted cross-entropy, AdamW, micro-batching, validation metrics."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import TensorBoardLogger
from torch import Tensor
from torch.optim.lr_scheduler import LambdaLR

from lit_sft.data import IGNORE_INDEX
from lit_sft.generation import generate
from lit_sft.model import GPT, GPTConfig

Batch = dict[str, Tensor]


def token_losses(model: GPT, input_ids: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """Cross-entropy of every non-ignored target (N,), and where those targets are (B, T)."""
    hidden = model.hidden_states(input_ids)
    keep = targets != IGNORE_INDEX
    # The output head is the single largest matrix product; run it on the counted positions only.
    logits = model.out_head(hidden[keep])
    return F.cross_entropy(logits.float(), targets[keep], reduction="none"), keep


def micro_batches(batch: Batch, size: int | None) -> list[Batch]:
    """`batch` cut into chunks of `size` rows, each without its all-padding trailing columns."""
    rows = batch["input_ids"].shape[0]
    size = size or rows
    chunks = []
    for start in range(0, rows, size):
        chunk = {key: value[start : start + size] for key, value in batch.items()}
        counted = (chunk["targets"] != IGNORE_INDEX).any(dim=0).nonzero()
        # Later columns hold only padding, which no earlier position attends to (causal).
        width = int(counted.max()) + 1 if len(counted) else 1
        chunk["input_ids"], chunk["targets"] = (
            chunk["input_ids"][:, :width],
            chunk["targets"][:, :width],
        )
        chunks.append(chunk)
    return chunks


def backward_token_mean(
    model: GPT,
    batch: Batch,
    micro_batch_size: int | None,
    scale: Tensor | float,
    backward: Callable[[Tensor], None] = Tensor.backward,
) -> Tensor:
    """Accumulates the gradient of `scale` x the summed token losses, one micro-batch at a time.

    With `scale` = 1 / (target tokens of the whole batch) every token weighs the same whatever
    micro-batch it lands in; averaging per-micro-batch means would over-weight short batches.
    Returns the (detached) summed loss.
    """
    loss_sum = torch.zeros((), device=batch["input_ids"].device)
    for chunk in micro_batches(batch, micro_batch_size):
        losses, _ = token_losses(model, chunk["input_ids"], chunk["targets"])
        backward(losses.sum() * scale)
        loss_sum += losses.detach().sum()
    return loss_sum


def warmup_cosine(step: int, warmup_steps: int, total_steps: int, min_lr_ratio: float) -> float:
    """LR multiplier: linear warmup to 1, then cosine decay to `min_lr_ratio` at `total_steps`."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


class InstructionModule(L.LightningModule):
    """GPT-2 finetuned on instruction batches with AdamW."""

    def __init__(
        self,
        model_config: dict[str, Any],
        lr: float = 5e-5,
        weight_decay: float = 0.1,
        betas: tuple[float, float] = (0.9, 0.999),
        micro_batch_size: int | None = None,
        grad_clip: float | None = None,
        lr_schedule: str = "constant",
        warmup_steps: int = 0,
        min_lr_ratio: float = 0.1,
        compile: bool = False,
        sample_max_new_tokens: int = 64,
    ) -> None:
        """`micro_batch_size` splits each batch for gradient accumulation (None: whole batch)."""
        super().__init__()
        if lr_schedule not in ("constant", "cosine"):
            raise ValueError(f"unknown lr_schedule {lr_schedule!r}; valid: constant, cosine")
        self.save_hyperparameters()
        # Optimisation is manual so gradient accumulation can weight every target token equally.
        self.automatic_optimization = False
        self.model = GPT(GPTConfig(**model_config))
        # Summed loss and token counts of the validation run so far: loss, tokens, response loss,
        # response tokens.
        self.val_totals = torch.zeros(4)
        self.tokens_seen = 0

    def configure_model(self) -> None:
        if self.hparams.compile:
            for block in self.model.blocks:
                block.compile(dynamic=True)

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        # The fused kernel beats the per-tensor loop PyTorch otherwise uses on CPUs (~1.5x here).
        optimizer = torch.optim.AdamW(
            self.model.parameters(),
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
            total = self.trainer.estimated_stepping_batches if step > hp.warmup_steps else step + 1
            return warmup_cosine(step, hp.warmup_steps, int(total), hp.min_lr_ratio)

        return {"optimizer": optimizer, "lr_scheduler": LambdaLR(optimizer, multiplier)}

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        optimizer, scheduler = self.optimizers(), self.lr_schedulers()
        strategy = self.trainer.strategy
        local_tokens = (batch["targets"] != IGNORE_INDEX).sum()
        global_tokens = strategy.reduce(local_tokens.float(), reduce_op="sum")
        # DDP averages gradients over ranks, so scaling by world_size / global tokens makes the
        # result the mean over every target token of the global batch.
        scale = self.trainer.world_size / global_tokens.clamp(min=1)
        optimizer.zero_grad()
        loss_sum = backward_token_mean(
            self.model, batch, self.hparams.micro_batch_size, scale, self.manual_backward
        )
        if global_tokens > 0:
            if self.hparams.grad_clip:
                self.clip_gradients(optimizer, gradient_clip_val=self.hparams.grad_clip)
            optimizer.step()
        scheduler.step()
        loss = strategy.reduce(loss_sum, reduce_op="sum") / global_tokens.clamp(min=1)
        self.tokens_seen += batch["input_ids"].numel() * self.trainer.world_size
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/tokens_seen", float(self.tokens_seen))
        self.log("train/lr", scheduler.get_last_lr()[0])
        return loss

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        losses, keep = token_losses(self.model, batch["input_ids"], batch["targets"])
        positions = torch.arange(keep.shape[1], device=keep.device)
        is_response = (positions >= batch["response_start"].unsqueeze(1))[keep]
        step_totals = [losses.sum(), losses.numel(), losses[is_response].sum(), is_response.sum()]
        self.val_totals += torch.stack(
            [torch.as_tensor(t, device=self.device) for t in step_totals]
        )

    def on_validation_epoch_start(self) -> None:
        self.val_totals = torch.zeros(4, dtype=torch.float64, device=self.device)

    def on_validation_epoch_end(self) -> None:
        loss, tokens, response_loss, response_tokens = self.trainer.strategy.reduce(
            self.val_totals, reduce_op="sum"
        )
        # Token-weighted over every batch validated, not a mean of per-batch means.
        self.log("val/loss", loss / tokens.clamp(min=1), prog_bar=True)
        self.log("val/response_loss", response_loss / response_tokens.clamp(min=1))
        if not self.trainer.sanity_checking:
            self._log_sample_answer()

    def _log_sample_answer(self) -> None:
        datamodule = self.trainer.datamodule
        if not isinstance(self.logger, TensorBoardLogger) or datamodule is None:
            return
        if self.global_rank != 0 or not datamodule.encoded.get("val"):
            return
        entry, encoded = datamodule.splits["val"][0], datamodule.encoded["val"][0]
        prompt = encoded.tokens[: encoded.prompt_length]
        answer = generate(self.model, [prompt], max_new_tokens=self.hparams.sample_max_new_tokens)[
            0
        ]
        text = datamodule.tokenizer.decode(answer)
        self.logger.experiment.add_text(
            "val/sample_answer",
            f"**Prompt:** {datamodule.style.prompt(entry)}\n\n**Answer:** {text}\n\n"
            f"**Reference:** {entry['output']}",
            self.global_step,
        )

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["tokens_seen"] = self.tokens_seen

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.tokens_seen = checkpoint.get("tokens_seen", 0)
