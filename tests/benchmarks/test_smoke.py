"""Every benchmark runs on gpt2-tiny in seconds and ends with a sound JSON line.

The book's side runs too where its code is (`../shared/bench/ref`, as in CI); a refactor that
breaks a script, or the book's parity, fails here.
"""

from __future__ import annotations

import importlib
import json
import math
import shlex
import sys
from collections.abc import Callable
from typing import Any

import pytest

from benchmarks import (
    bench_ceiling,
    bench_done_rows,
    bench_dpo,
    bench_generate,
    bench_lora,
    bench_memory,
    bench_recipe,
    bench_recipe_gpu,
    bench_train,
    common,
)

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


def test_bench_generate_answers_as_the_book_does(capsys: pytest.CaptureFixture[str]) -> None:
    result = smoke(capsys, bench_generate.main, "--n", "3", "--batch-size", "2",
                   "--max-new-tokens", "6", "--slow-n", "1", "--slow-new-tokens", "3")  # fmt: skip
    assert set(result["sides"]) == sides("lit_sft", "not prepacked", "uncached")
    # Every way gives lit_sft's tokens (the slow ways their first 3 of the 6).
    assert result["identical_answers"] == {
        name: s["answers"] for name, s in result["sides"].items()
    }
    assert result["answer_lengths"] == [6, 6, 6]
    assert all(positive(v) for v in result["decode_tokens_per_s"].values())


def test_bench_done_rows_ends_answers_at_different_lengths(
    capsys: pytest.CaptureFixture[str],
) -> None:
    result = smoke(capsys, bench_done_rows.main, "--n", "4", "--max-new-tokens", "8",
                   "--rounds", "1")  # fmt: skip
    assert set(result["sides"]) == sides("lit_sft", "not prepacked", "uncached", "done rows kept")
    lengths = result["answer_lengths"]
    assert lengths[0] < 8 and lengths[-1] == 8  # some answers end, not all
    assert result["identical_answers"]["done rows kept"] == 4


def test_bench_recipe_extrapolates_both_sides(capsys: pytest.CaptureFixture[str]) -> None:
    result = smoke(capsys, bench_recipe.main, "--steps", "2", "--batch-size", "2",
                   "--new-tokens", "3", "--book-new-tokens", "2", "--answer-batch-size", "4",
                   "--peak-size", "64", "--same-process")  # fmt: skip
    assert set(result["sides"]) == sides("lit_sft", "lit_sft grouped")
    grouped, plain = result["sides"]["lit_sft grouped"], result["sides"]["lit_sft"]
    # Grouped batches carry less padding: a larger share of their positions are targets.
    assert grouped["target_share"] > plain["target_share"]
    assert all(s["mfu"] > 0 for s in result["sides"].values())


def test_bench_ceiling_times_the_products_of_a_step(capsys: pytest.CaptureFixture[str]) -> None:
    result = smoke(capsys, bench_ceiling.main, "--decode-model", "gpt2-tiny", "--batch-size",
                   "2", "--length", "8", "--steps", "2", "--decode-batch", "2",
                   "--peak-size", "64", "--same-process")  # fmt: skip
    assert set(result["sides"]) == sides("lit_sft", "GEMM ceiling")
    assert set(result["gemm_s"]) == {"blocks", "attention", "head"}
    assert all(positive(v) for v in result["decoding"].values() if not isinstance(v, str))


def test_bench_dpo_checks_the_log_probabilities(capsys: pytest.CaptureFixture[str]) -> None:
    result = smoke(capsys, bench_dpo.main, "--steps", "2", "--batch-size", "2")
    assert set(result["sides"]) == sides("lit_sft", "lit_sft precomputed")
    if HAS_BOOK:
        assert result["logp_max_abs_diff"] < 1e-5


def test_bench_recipe_gpu_parses_its_options_on_a_cpu() -> None:
    args = bench_recipe_gpu.parse_args(
        ["--variants", "module.compile=true", "trainer.precision=32-true data.packing=true",
         "--precisions", "auto", "32-true", "--answer-batch-sizes", "8", "32"]
    )  # fmt: skip
    assert args.variants == ["module.compile=true", "trainer.precision=32-true data.packing=true"]
    assert args.precisions == ["auto", "32-true"] and args.answer_batch_sizes == [8, 32]
    assert args.device == "cuda" and args.model == "gpt2-medium"


@pytest.mark.slow  # train.py and evaluate.py in their own processes: minutes on 2 cores
def test_bench_recipe_gpu_runs_on_a_cpu(capsys: pytest.CaptureFixture[str]) -> None:
    result = smoke(capsys, bench_recipe_gpu.main, "--model", "tiny", "--device", "cpu",
                   "--entries", "24", "--new-tokens", "3", "--book-prompts", "1", "--precisions",
                   "--variants", "trainer.precision=32-true data.group_by_length=true")  # fmt: skip
    assert set(result["sides"]) == sides(
        "lit_sft trainer.precision=32-true data.group_by_length=true"
    )
    assert result["answering"]["32"]["answers"] == 2


def documented_commands() -> list[list[str]]:
    """Every `python -m benchmarks.<script> ...` command the READMEs show, as argv lists."""
    text = "\n".join((common.REPO / f).read_text() for f in ("README.md", "benchmarks/README.md"))
    commands = []
    for line in text.replace("\\\n", " ").splitlines():
        if "python -m benchmarks." in line:
            command = line[line.index("python -m benchmarks.") :].split("`")[0]
            commands.append(shlex.split(command, comments=True)[2:])
    return commands


@pytest.mark.parametrize("command", documented_commands(), ids=" ".join)
def test_documented_commands_parse(command: list[str]) -> None:
    module = importlib.import_module(command[0])
    args = module.parse_args(command[1:])
    assert args.model in common.MODELS


def test_ratios_to_the_book_worked_by_hand() -> None:
    sides = {
        "book": common.side(seconds=2.0, tokens_per_s=10.0, peak_mib=100.0),
        "lit_sft": common.side(seconds=0.5, tokens_per_s=30.0, peak_mib=50.0),
    }
    assert common.vs_book(sides)["lit_sft"] == {"speedup": 4.0, "throughput": 3.0, "memory": 0.5}
    assert common.vs_book({"lit_sft": sides["lit_sft"]}) == {}


def test_the_old_spellings_read_the_command_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["bench_lora", "--rank", "3", "--alpha", "6"])
    assert bench_lora.parse_args(None).lora_rank == 3
    assert bench_lora.parse_args(None).lora_alpha == 6
    monkeypatch.setattr(sys, "argv", ["bench_memory", "--length", "7", "--precision", "bf16-mixed"])
    args = bench_memory.parse_args(None)
    assert (args.length, args.precision, args.checkpointing) == (7, "bf16-mixed", False)
    monkeypatch.setattr(sys, "argv", ["bench_done_rows", "--n", "5"])
    args = bench_done_rows.parse_args(None)
    assert (args.n, args.batch_size, args.eos_id) == (5, 5, "staggered")
