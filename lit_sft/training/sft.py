"""Supervised finetuning: the mean cross-entropy over every target token (the book's chapter 7).

`InstructionModule` stays importable: run folders written before the methods became siblings name
it as their `module._target_`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lit_sft.tokenizer import IGNORE_INDEX
from lit_sft.training.base import TrainingModule
from lit_sft.training.losses import Batch, token_losses
from lit_sft.training.steps import token_loss_sums


class SFTModule(TrainingModule):
    """GPT-2 finetuned on instruction batches: every target token weighs the same."""

    metrics = ("loss",)
    # `response_loss`: over the response's targets only, whether or not the prompt is masked.
    val_metrics = ("loss", "response_loss")
    progress_bar = ("train/loss", "val/loss")

    def batch_weight(self, batch: Batch) -> Tensor:
        return (batch["targets"] != IGNORE_INDEX).sum()

    def train_sums(self, batch: Batch) -> tuple[Tensor, Tensor]:
        return token_loss_sums(self.model, batch)

    def val_sums(self, batch: Batch) -> tuple[Tensor, Tensor]:
        losses, keep = token_losses(self.model, batch["input_ids"], batch["targets"])
        positions = torch.arange(keep.shape[1], device=keep.device)
        is_response = (positions >= batch["response_start"].unsqueeze(1))[keep]
        sums = torch.stack([losses.sum(), losses[is_response].sum()])
        weights = torch.stack([torch.tensor(losses.numel()).to(sums), is_response.sum().to(sums)])
        return sums, weights


InstructionModule = SFTModule
