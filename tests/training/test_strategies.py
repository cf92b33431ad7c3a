"""The precision a run gets when it asks for `auto`."""

from __future__ import annotations

import pytest
import torch

from lit_sft.training.strategies import default_precision


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed", "16-mixed", "64-true"])
def test_an_explicit_precision_is_kept(precision: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert default_precision(precision, "auto") == precision


@pytest.mark.parametrize(
    ("accelerator", "cuda", "bf16", "expected"),
    [
        ("auto", True, True, "bf16-mixed"),
        ("gpu", True, True, "bf16-mixed"),
        ("cuda", True, True, "bf16-mixed"),
        ("auto", True, False, "32-true"),  # a GPU without bf16 (V100, T4)
        ("cpu", True, True, "32-true"),  # a machine with a GPU, told to train on its CPU
        ("auto", False, False, "32-true"),
    ],
)
def test_auto_is_bf16_on_a_gpu_that_has_it(
    accelerator: str, cuda: bool, bf16: bool, expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: bf16)
    assert default_precision("auto", accelerator) == expected
