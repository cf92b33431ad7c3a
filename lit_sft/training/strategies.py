"""Lightning settings that a YAML file cannot spell: strategies needing Python objects, and the
precision that depends on the machine."""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch.strategies import FSDPStrategy

from lit_sft.model import Block


def fsdp_strategy(**kwargs: Any) -> FSDPStrategy:
    """FSDP with each transformer block its own shard unit; checkpoints are gathered (full)."""
    kwargs.setdefault("auto_wrap_policy", {Block})
    kwargs.setdefault("state_dict_type", "full")
    return FSDPStrategy(**kwargs)


def default_precision(precision: str, accelerator: str) -> str:
    """`precision=auto`: bf16-mixed where the run lands on a GPU with bf16, else 32-true (CPUs
    without AVX-512-BF16/AMX run bf16 matrix products ~100x slower than fp32)."""
    if precision != "auto":
        return precision
    on_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    return "bf16-mixed" if on_gpu and torch.cuda.is_bf16_supported() else "32-true"
