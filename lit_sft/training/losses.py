"""Pure losses: token cross-entropy (SFT) and sequence log-probabilities (DPO's family, in
`lit_sft.training.preference_losses`, is computed from them).

How a step weights them (every target token or pair the same) is `lit_sft.training.steps`'.
"""

from __future__ import annotations

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
