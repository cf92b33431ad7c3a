"""Losses: token cross-entropy where every token weighs the same (SFT); the DPO loss of pairs.

Worked example: a batch of two rows with 3 and 1 counted targets, losses [1, 2, 3] and [6], has a
token mean of (1 + 2 + 3 + 6) / 4 = 3. Split into two micro-batches of one row each, the per-row
means 2 and 6 would average to 4; `backward_token_mean` scales each by 1 / 4 instead, so its
gradient is that of 3, whatever the split.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from lit_sft.model import GPT
from lit_sft.tokenizer import IGNORE_INDEX

Batch = dict[str, Tensor]


def token_losses(
    model: GPT, input_ids: Tensor, targets: Tensor, **context: Tensor
) -> tuple[Tensor, Tensor]:
    """Cross-entropy of every non-ignored target (N,), and where those targets are (B, T).

    `context`: a packed batch's `positions` and `attn_mask` (`lit_sft.data.packing`)."""
    hidden = model.hidden_states(input_ids, **context)
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
        losses, _ = token_losses(model, chunk["input_ids"], chunk["targets"], **packing(chunk))
        backward(losses.sum() * scale)
        loss_sum += losses.detach().sum()
    return loss_sum


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


def sequence_logps(model: GPT, input_ids: Tensor, targets: Tensor, mean: bool = False) -> Tensor:
    """Each row's log-probability of its counted targets (B,): their sum, or with `mean` average."""
    losses, keep = token_losses(model, input_ids, targets)
    rows = keep.nonzero()[:, 0]
    logps = torch.zeros(keep.shape[0], device=losses.device).index_add(0, rows, -losses)
    return logps / keep.sum(dim=1).clamp(min=1) if mean else logps


@dataclass(frozen=True)
class PreferenceLosses:
    """Per pair: the DPO loss and the implicit rewards β·(log π − log π_ref) of both answers."""

    losses: Tensor
    chosen_rewards: Tensor
    rejected_rewards: Tensor


def dpo_loss(
    policy_chosen: Tensor,
    policy_rejected: Tensor,
    reference_chosen: Tensor,
    reference_rejected: Tensor,
    beta: float = 0.1,
    label_smoothing: float = 0.0,
) -> PreferenceLosses:
    """DPO: −log σ(β·[(log π(c) − log π_ref(c)) − (log π(r) − log π_ref(r))]), per pair.

    `label_smoothing` ε is conservative DPO: the preference label is wrong with probability ε,
    so the loss is −(1 − ε)·log σ(z) − ε·log σ(−z). Worked example: log-probabilities policy
    chosen −1, rejected −3, reference −2 and −2, β = 0.5: z = 0.5·((−1 + 2) − (−3 + 2)) = 1 and
    the loss is −log σ(1) = log(1 + e⁻¹) ≈ 0.3133; rewards 0.5 and −0.5. Policy = reference gives
    z = 0 and log 2 ≈ 0.6931.
    """
    chosen_rewards = beta * (policy_chosen - reference_chosen)
    rejected_rewards = beta * (policy_rejected - reference_rejected)
    margin = chosen_rewards - rejected_rewards
    losses = -(1 - label_smoothing) * F.logsigmoid(margin) - label_smoothing * F.logsigmoid(-margin)
    return PreferenceLosses(losses, chosen_rewards.detach(), rejected_rewards.detach())
