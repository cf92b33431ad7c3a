"""LoRA (Hu et al. 2021; the book's appendix E): frozen GPT-2 linears plus low-rank updates.

`add_adapters` swaps the targeted `nn.Linear` layers of a `GPT` for `LoRALinear` in place and
freezes everything else; `merge_adapters` folds the updates back into plain `nn.Linear` weights,
so the merged model is an ordinary GPT-2 (what the run exports). Parameter names of the base
weights do not change (`blocks.0.attn.qkv.weight`), the adapters add `.lora_a` and `.lora_b`.

Scaling is the paper's `alpha / rank`. The book's appendix E scales by `alpha` alone, so its
`rank=16, alpha=16` is `rank=16, alpha=256` here.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import Tensor, nn

from lit_sft.errors import InvalidInput
from lit_sft.model import GPT

# Linear layers by their name inside a block (or the model, for the head).
BLOCK_TARGETS = ("qkv", "attn_proj", "fc", "mlp_proj")
TARGETS = (*BLOCK_TARGETS, "out_head")
_TARGET_PATHS = {
    "qkv": "attn.qkv",
    "attn_proj": "attn.proj",
    "fc": "mlp.fc",
    "mlp_proj": "mlp.proj",
}
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"


@dataclass(frozen=True)
class LoRAConfig:
    """Rank, scale numerator, dropout on the adapter input, and which linears get an adapter."""

    rank: int = 16
    alpha: float = 32.0
    dropout: float = 0.05
    targets: tuple[str, ...] = BLOCK_TARGETS

    def __post_init__(self) -> None:
        object.__setattr__(self, "targets", tuple(self.targets))  # a YAML list arrives as a list
        unknown = [t for t in self.targets if t not in TARGETS]
        if unknown or not self.targets:
            raise InvalidInput(
                f"adapter.targets={list(self.targets)}: unknown {unknown or 'empty list'}; "
                f"valid targets: {', '.join(TARGETS)}"
            )
        if self.rank < 1:
            raise InvalidInput(f"adapter.rank={self.rank}: the rank must be at least 1")


class LoRALinear(nn.Module):
    """A frozen `nn.Linear` (same `weight`/`bias` names) plus `scaling * B @ A`, B starting at 0."""

    def __init__(self, linear: nn.Linear, rank: int, alpha: float, dropout: float) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = linear.weight.requires_grad_(False)
        self.bias = linear.bias.requires_grad_(False) if linear.bias is not None else None
        factory = {"device": linear.weight.device, "dtype": linear.weight.dtype}
        self.lora_a = nn.Parameter(torch.empty(rank, self.in_features, **factory))
        # B = 0 makes the update zero, so step 0 computes exactly the base model.
        self.lora_b = nn.Parameter(torch.zeros(self.out_features, rank, **factory))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))  # nn.Linear's own init, as peft does
        self.rank, self.alpha = rank, alpha
        self.scaling = alpha / rank
        self.dropout = nn.Dropout(dropout)
        self.enabled = True
        self.train(linear.training)  # an adapter added to a model in eval mode has no dropout

    def forward(self, x: Tensor) -> Tensor:
        y = F.linear(x, self.weight, self.bias)
        if not self.enabled:
            return y
        return y + F.linear(F.linear(self.dropout(x), self.lora_a), self.lora_b) * self.scaling

    def merged(self) -> nn.Linear:
        """A plain `nn.Linear` computing what this layer computes in eval mode."""
        linear = nn.Linear(
            self.in_features,
            self.out_features,
            bias=self.bias is not None,
            device="meta",
        )
        with torch.no_grad():
            delta = (self.lora_b @ self.lora_a) * self.scaling
            linear.weight = nn.Parameter(self.weight + delta.to(self.weight.dtype))
            if self.bias is not None:
                linear.bias = nn.Parameter(self.bias.detach().clone())
        return linear


def _target_owners(model: GPT, targets: Sequence[str]) -> Iterator[tuple[nn.Module, str]]:
    """(parent module, attribute) of every targeted linear."""
    for block in model.blocks:
        for target in targets:
            if target in _TARGET_PATHS:
                parent_path, _, attr = _TARGET_PATHS[target].rpartition(".")
                yield block.get_submodule(parent_path), attr
    if "out_head" in targets:
        yield model, "out_head"


def add_adapters(model: GPT, config: LoRAConfig) -> GPT:
    """Freezes `model` and gives each targeted linear a LoRA adapter, in place; returns it."""
    if has_adapters(model):
        raise ValueError("the model already has LoRA adapters")
    model.requires_grad_(False)
    for parent, attr in _target_owners(model, config.targets):
        layer = LoRALinear(getattr(parent, attr), config.rank, config.alpha, config.dropout)
        setattr(parent, attr, layer)
    return model


def lora_layers(model: nn.Module) -> list[LoRALinear]:
    return [m for m in model.modules() if isinstance(m, LoRALinear)]


def has_adapters(model: nn.Module) -> bool:
    """Whether `model` holds LoRA layers."""
    return bool(lora_layers(model))


@contextmanager
def disable_adapters(model: nn.Module) -> Iterator[nn.Module]:
    """Inside it, `model` computes exactly its base model (e.g. DPO's reference model)."""
    layers = lora_layers(model)
    states = [layer.enabled for layer in layers]
    for layer in layers:
        layer.enabled = False
    try:
        yield model
    finally:
        for layer, state in zip(layers, states, strict=True):
            layer.enabled = state


def merge_adapters(model: GPT) -> GPT:
    """Folds every adapter into its linear's weight, in place: a plain GPT-2 again; returns it."""
    for parent, attr in _target_owners(model, TARGETS):
        layer = getattr(parent, attr)
        if isinstance(layer, LoRALinear):
            setattr(parent, attr, layer.merged())
    return model


def adapter_config(model: GPT) -> LoRAConfig:
    """The LoRA settings `model`'s adapters were added with."""
    targets = [t for t in TARGETS if any(n.endswith(_path(t)) for n in _adapted_names(model))]
    first = lora_layers(model)[0]
    return LoRAConfig(first.rank, first.alpha, first.dropout.p, tuple(targets))


def _path(target: str) -> str:
    return _TARGET_PATHS.get(target, target)


def _adapted_names(model: GPT) -> list[str]:
    return [name for name, m in model.named_modules() if isinstance(m, LoRALinear)]


def adapter_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """Only the adapter tensors (`*.lora_a`, `*.lora_b`) of `model`'s state dict."""
    return {k: v for k, v in model.state_dict().items() if k.endswith((".lora_a", ".lora_b"))}


def save_adapters(
    tensors: dict[str, Tensor], config: LoRAConfig, base_weights: str | None, out_dir: str | Path
) -> Path:
    """Writes adapter_model.safetensors and adapter_config.json (rank, alpha, targets, base)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    contiguous = {name: t.detach().cpu().contiguous() for name, t in tensors.items()}
    save_file(contiguous, out / ADAPTER_WEIGHTS, metadata={"format": "pt"})
    description = {
        **asdict(config),
        "targets": list(config.targets),
        "base_weights": base_weights,
        "scaling": config.alpha / config.rank,
    }
    (out / ADAPTER_CONFIG).write_text(json.dumps(description, indent=2) + "\n", encoding="utf-8")
    return out


def trainable_parameters(model: nn.Module) -> int:
    """Parameters that receive gradients (every one under full finetuning)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def check_adapter_checkpoint(
    checkpoint: dict[str, Any], base_weights: str | None, needed: set[str]
) -> None:
    """Refuses to resume adapters on other base weights, or with other adapter settings (the
    checkpoint's tensors must be exactly the `needed` trainable ones)."""
    if checkpoint.get("base_weights") != base_weights:
        raise InvalidInput(
            f"the checkpoint's adapters were trained on base weights "
            f"{checkpoint.get('base_weights')}, this run loads {base_weights}; "
            "pass the same model.weights to resume"
        )
    saved = set(checkpoint["state_dict"])
    if saved != needed:
        raise InvalidInput(
            f"the checkpoint holds {len(saved)} tensors, the adapters of this run need "
            f"{len(needed)} (e.g. {sorted(needed ^ saved)[:2]}); resume with the run's own "
            "adapter settings"
        )
