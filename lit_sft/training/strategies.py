"""Lightning strategies that need Python objects a YAML file cannot spell."""

from __future__ import annotations

from typing import Any

from lightning.pytorch.strategies import FSDPStrategy

from lit_sft.model import Block


def fsdp_strategy(**kwargs: Any) -> FSDPStrategy:
    """FSDP with each transformer block its own shard unit; checkpoints are gathered (full)."""
    kwargs.setdefault("auto_wrap_policy", {Block})
    kwargs.setdefault("state_dict_type", "full")
    return FSDPStrategy(**kwargs)
