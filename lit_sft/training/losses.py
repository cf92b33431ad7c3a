"""Pure losses: token cross-entropy (SFT), sequence log-probabilities and the DPO loss of pairs.

How a step weights them (every target token or pair the same) is `lit_sft.training.steps`'.
"""

from __future__ import annotations

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
