"""Every benchmark runs on gpt2-tiny in seconds and ends with a sound JSON line.

The book's side runs too where its code is (`../shared/bench/ref`, as in CI); a refactor that
breaks a script, or the book's parity, fails here.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import pytest

from benchmarks import bench_lora, bench_memory, bench_train, common

HAS_BOOK = common.find_book(str(common.DEFAULT_BOOK_DIR)) is not None
TINY = ["--model", "gpt2-tiny", "--threads", "1"]
# Side figures every script reports, and the ratios to the book's.
FIGURES = ("seconds", "tokens_per_s", "peak_mib")
RATIOS = ("speedup", "throughput", "memory")


def positive(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def smoke(
    capsys: pytest.CaptureFixture[str], main: Callable[..., dict[str, Any]], *argv: str
) -> dict[str, Any]:
    """Runs a script's `main`; checks its last line is the JSON it returned, with sound figures."""
    result = main([*TINY, *argv])
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed == json.loads(json.dumps(result))
    assert printed["book_dir"] == (str(common.DEFAULT_BOOK_DIR.resolve()) if HAS_BOOK else None)
    for name, side in printed["sides"].items():
        assert all(positive(side[key]) for key in FIGURES), (name, side)
    if HAS_BOOK:
        assert set(printed["vs_book"]) == set(printed["sides"])
        for name, ratios in printed["vs_book"].items():
            assert all(positive(ratios[key]) for key in RATIOS), (name, ratios)
    return printed


def sides(*lit: str) -> set[str]:
    return {"book", *lit} if HAS_BOOK else set(lit)


@pytest.mark.slow  # two spawned processes: ~30 s on a busy 2-core machine
def test_bench_train_spawns_each_side(capsys: pytest.CaptureFixture[str]) -> None:
    result = smoke(capsys, bench_train.main, "--steps", "2", "--warmup", "1", "--batch-size", "2")
    assert set(result["sides"]) == sides("lit_sft")
    assert len(result["sides"]["lit_sft"]["losses"]) == 2
    if HAS_BOOK:
        check = result["loss_checks"]["lit_sft"]
        assert check["checked"] and check["max_abs_loss_diff"] < 1e-5


def test_bench_train_matches_the_book_step_for_step(capsys: pytest.CaptureFixture[str]) -> None:
    result = smoke(
        capsys, bench_train.main, "--steps", "2", "--warmup", "1", "--batch-size", "2",
        "--same-process", "--checkpointing", "--packing", "--lightning",
    )  # fmt: skip
    assert set(result["sides"]) == sides("lit_sft", "checkpointed", "packed", "lightning")
    for name in ("lit_sft", "checkpointed", "packed", "lightning"):
        if HAS_BOOK:
            assert result["loss_checks"][name]["max_abs_loss_diff"] < 1e-5, name


def test_bench_lora_is_bench_train_with_a_lora_side(capsys: pytest.CaptureFixture[str]) -> None:
    result = smoke(capsys, bench_lora.main, "--steps", "2", "--batch-size", "2", "--rank", "2",
                   "--same-process")  # fmt: skip
    assert set(result["sides"]) == sides("lit_sft", "lora r2")
    lora = result["sides"]["lora r2"]
    assert lora["trainable_parameters"] < result["sides"]["lit_sft"]["trainable_parameters"]
    if HAS_BOOK:
        assert result["loss_checks"]["lora r2"]["steps_checked"] == 1


def test_bench_memory_trains_random_rows(capsys: pytest.CaptureFixture[str]) -> None:
    result = smoke(capsys, bench_memory.main, "--batch-size", "2", "--length", "16", "--steps",
                   "2", "--same-process")  # fmt: skip
    assert set(result["sides"]) == sides("lit_sft", "checkpointed")
    assert result["length"] == 16
    losses = {name: side["losses"] for name, side in result["sides"].items()}
    assert losses["checkpointed"] == pytest.approx(losses["lit_sft"], abs=1e-5)


def test_without_the_book_its_side_is_skipped_with_a_note(
    capsys: pytest.CaptureFixture[str], tmp_path
) -> None:
    result = bench_train.main(
        [*TINY, "--steps", "1", "--warmup", "0", "--batch-size", "2", "--same-process",
         "--book-dir", str(tmp_path)]
    )  # fmt: skip
    assert "no book code at" in capsys.readouterr().err
    assert set(result["sides"]) == {"lit_sft"} and result["vs_book"] == {}
