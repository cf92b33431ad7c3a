"""The training step's pieces: micro-batches, token-weighted backward passes, the SFT step.

Worked example: a batch of two rows with 3 and 1 counted targets, losses [1, 2, 3] and [6], has a
token mean of (1 + 2 + 3 + 6) / 4 = 3. Split into two micro-batches of one row each, the per-row
means 2 and 6 would average to 4; `backward_token_mean` scales each by 1 / 4 instead, so its
gradient is that of 3, whatever the split.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from lit_sft.model import GPT
from lit_sft.tokenizer import IGNORE_INDEX
from lit_sft.training.losses import Batch, token_losses

# A (micro-)batch's summed loss, to backpropagate, and the detached sums of the metrics logged.
BatchSums = Callable[[Batch], tuple[Tensor, Tensor]]


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
        for key in ("input_ids", "targets", "positions"):
            if key in chunk:
                chunk[key] = chunk[key][:, :width]
        if "attn_mask" in chunk:
            chunk["attn_mask"] = chunk["attn_mask"][:, :, :width, :width]
        chunks.append(chunk)
    return chunks


def packing(batch: Batch) -> dict[str, Tensor]:
    """The `positions` and `attn_mask` of a packed batch; nothing for a padded one."""
    return {key: batch[key] for key in ("positions", "attn_mask") if key in batch}


def token_loss_sums(model: GPT, batch: Batch) -> tuple[Tensor, Tensor]:
    """The summed cross-entropy of a batch's target tokens, and its detached copy (1,)."""
    losses, _ = token_losses(model, batch["input_ids"], batch["targets"], **packing(batch))
    loss_sum = losses.sum()
    return loss_sum, loss_sum.detach().unsqueeze(0)


def backward_sums(
    batch: Batch,
    micro_batch_size: int | None,
    sums_of: BatchSums,
    scale: Tensor | float,
    backward: Callable[[Tensor], None] = Tensor.backward,
) -> Tensor:
    """Accumulates the gradient of `scale` x the summed loss, one micro-batch at a time; returns
    the detached metric sums of the whole batch (`sums_of` gives both for one micro-batch)."""
    total: Tensor | None = None
    for chunk in micro_batches(batch, micro_batch_size):
        loss_sum, sums = sums_of(chunk)
        backward(loss_sum * scale)
        total = sums if total is None else total + sums
    assert total is not None  # a batch has at least one row
    return total


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
    sums = backward_sums(
        batch, micro_batch_size, lambda chunk: token_loss_sums(model, chunk), scale, backward
    )
    return sums[0]


def sft_step(
    model: GPT,
    optimizer: torch.optim.Optimizer,
    batch: Batch,
    *,
    scale: Tensor | float,
    micro_batch_size: int | None = None,
    backward: Callable[[Tensor], None] = Tensor.backward,
    before_step: Callable[[], None] | None = None,
    take_step: bool = True,
) -> Tensor:
    """One optimizer step on `batch`: zero the gradients, accumulate them, step; the summed loss.

    `before_step` runs between the backward passes and the step (gradient clipping);
    `take_step=False` skips the step (a global batch without any target token).
    """
    optimizer.zero_grad()
    loss_sum = backward_token_mean(model, batch, micro_batch_size, scale, backward)
    if take_step:
        if before_step is not None:
            before_step()
        optimizer.step()
    return loss_sum
