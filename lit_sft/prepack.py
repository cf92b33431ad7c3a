"""Decoding's few-row products on the CPU through oneDNN, each weight reordered once for them.

A decode step multiplies one row per sequence by every weight of the model, so it is bound by how
fast the weights stream from memory. `nn.Linear` on the CPU runs MKL's general GEMM, which streams
such shapes at a fraction of the memory bandwidth; oneDNN's kernels, with the weight reordered
into their blocked layout once per generation, stream them faster: gpt2-small decodes 1.3-1.65x
the tokens/s at batch 1-32 (`benchmarks/RESULTS.md`). The reordered copies cost the weights'
memory again for as long as the generation runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def can_prepack(weight: Tensor) -> bool:
    """Whether oneDNN can take this weight: float32 on the CPU, in a build with oneDNN."""
    return (
        weight.device.type == "cpu"
        and weight.dtype == torch.float32
        and weight.dim() == 2
        and torch.backends.mkldnn.is_available()
    )


class PrepackedForward:
    """A linear layer's forward: inputs of up to `max_rows` rows through oneDNN and the layer's
    weight in oneDNN's layout; more rows (a prompt) through the layer's own GEMM, which is
    faster for them."""

    def __init__(self, linear: nn.Linear, max_rows: int) -> None:
        self.linear = linear
        self.max_rows = max_rows
        self.weight = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), max_rows)

    def __call__(self, x: Tensor) -> Tensor:
        if x.numel() > self.max_rows * x.shape[-1]:
            return F.linear(x, self.linear.weight, self.linear.bias)
        return torch.ops.mkldnn._linear_pointwise(x, self.weight, self.linear.bias, "none", [], "")


def is_prepacked(linear: nn.Module) -> bool:
    """Whether `linear` runs through a prepacked weight now (inside `prepacked_linears`)."""
    return isinstance(vars(linear).get("forward"), PrepackedForward)


def _prepackable(module: nn.Module) -> Iterator[nn.Linear]:
    # A compiled module (`module.compile=true`) runs its layers' forward through Dynamo, which
    # cannot lower a prepacked weight that is not one of its graph's constants.
    if getattr(module, "_compiled_call_impl", None) is not None:
        return
    if type(module) is nn.Linear and can_prepack(module.weight) and "forward" not in vars(module):
        yield module
    for child in module.children():
        yield from _prepackable(child)


@contextmanager
def prepacked_linears(model: nn.Module, max_rows: int, enabled: bool = True) -> Iterator[None]:
    """Within it, every `nn.Linear` of `model` that oneDNN can take runs products of up to
    `max_rows` rows with a prepacked weight; the layers are as before once it exits.

    Layers already prepacked (by an enclosing call: a chat session, an evaluation's batches) keep
    their weights, so a nested generation reorders nothing again; compiled modules keep theirs.
    """
    linears = list(_prepackable(model)) if enabled else []
    try:
        for linear in linears:
            # An instance attribute overrides the class's forward for this layer alone.
            linear.forward = PrepackedForward(linear, max_rows)
        yield
    finally:
        for linear in linears:
            vars(linear).pop("forward", None)
