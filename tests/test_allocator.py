"""`keep_freed_memory`: the pages of a freed big block are reused, not faulted in again."""

from __future__ import annotations

import ctypes
import ctypes.util
import subprocess
import sys
import textwrap

import pytest
import torch
from omegaconf import open_dict

import lit_sft.cli.train as train_module
from lit_sft.allocator import keep_freed_memory

# Fills and frees a 68 MB block of glibc's malloc (where torch's CPU tensors come from), then
# four smaller ones (64 to 52 MB), each of which fits in the memory the first one left; prints
# whether the setting applied and the page faults of the four.
PROBE = textwrap.dedent(
    """
    import ctypes, resource, sys
    from lit_sft.allocator import keep_freed_memory
    applied = keep_freed_memory() if sys.argv[1] == "keep" else None
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    def fill(megabytes):
        block = libc.malloc(megabytes << 20)
        ctypes.memset(block, 1, megabytes << 20)
        libc.free(block)
    fill(68)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for megabytes in (64, 60, 56, 52):
        fill(megabytes)
    print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    """
)


def page_faults(mode: str) -> tuple[str, int]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True
    ).stdout.split()
    return out[0], int(out[1])


@pytest.mark.skipif(sys.platform != "linux", reason="glibc's malloc")
def test_freed_big_blocks_are_reused_instead_of_faulted_in_again() -> None:
    applied, kept = page_faults("keep")
    _, default = page_faults("default")
    assert applied == "True"
    # By default glibc maps each block anew: at least one fault per 2 MB (huge) page of 232 MB.
    assert default >= 116
    assert kept * 20 < default


@pytest.mark.parametrize("keep", [True, False])
def test_training_keeps_freed_memory_unless_told_not_to(tiny_config, monkeypatch, keep) -> None:
    calls = []
    monkeypatch.setattr(train_module, "keep_freed_memory", lambda: calls.append(1))
    try:
        train_module.train(tiny_config(f"keep_freed_memory={str(keep).lower()}"))
    finally:
        torch.set_flush_denormal(False)
    assert calls == ([1] if keep else [])


def test_without_a_c_library_nothing_is_set(monkeypatch) -> None:
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: None)
    assert keep_freed_memory() is False


def test_a_c_library_without_mallopt_is_left_alone(monkeypatch) -> None:
    monkeypatch.setattr(ctypes, "CDLL", lambda name: object())
    assert keep_freed_memory() is False


def test_a_config_saved_before_the_option_existed_keeps_freed_memory(
    tiny_config, monkeypatch
) -> None:
    cfg = tiny_config()
    with open_dict(cfg):
        del cfg["keep_freed_memory"]
    calls = []
    monkeypatch.setattr(train_module, "keep_freed_memory", lambda: calls.append(1))
    try:
        train_module.train(cfg)
    finally:
        torch.set_flush_denormal(False)
    assert calls == [1]
