"""The book's chapter-7 training step against lit_sft's, on the same weights and the same batches.

    python -m benchmarks.bench_train --model gpt2-small --steps 6 [--lightning] [--rounds 2]

Each side runs the first `--steps` batches of the book's train split in file order (`--length L`:
random token rows) in its own spawned process, in turn: the book's loop, lit_sft's step and a
side per variant asked for (`steps.py`). Where a side saw the book's batches its losses must equal
the book's within 1e-3 (they agree to ~1e-6), or it exits 1. Prints a table (median step after
`--warmup`, positions/s, peak memory, ratios to the book), the losses, then one JSON line.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from benchmarks import common
from benchmarks.steps import Spec, book_side, lightning_side, lit_name, lit_side

LOSS_TOLERANCE = 1e-3


def parse_args(argv: Sequence[str] | None) -> Any:
    p = common.parser(__doc__)
    p.add_argument("--tiny", action="store_true", help="--model gpt2-tiny")
    p.add_argument("--steps", type=int, default=6, help="optimizer steps, warm-up included")
    p.add_argument("--warmup", type=int, default=2, help="steps left out of the statistics")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--length", type=int, default=None, help="random token rows of this length")
    p.add_argument("--shuffle", action="store_true", help="each side shuffles its own way")
    p.add_argument("--mask-instructions", action="store_true")
    p.add_argument("--rounds", type=int, default=1, help="each side's fastest of this many rounds")
    p.add_argument("--lightning", action="store_true", help="also time the full Trainer")
    p.add_argument("--compile", action="store_true", help="also lit_sft with module.compile=true")
    p.add_argument("--packing", action="store_true", help="also lit_sft with data.packing=true")
    p.add_argument("--checkpointing", action="store_true", help="also activation checkpointing")
    p.add_argument("--precision", choices=["32-true", "bf16-mixed"], default="32-true")
    p.add_argument("--lora-rank", type=int, default=None, help="also LoRA of this rank")
    p.add_argument("--lora-alpha", type=float, default=32.0)
    p.add_argument(
        "--keep-freed-memory",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="lit_sft's sides keep freed memory for reuse, as train.py does",
    )
    p.add_argument("--same-process", action="store_true", help="no spawn (a quick check)")
    args = p.parse_args(argv)
    args.model = "gpt2-tiny" if args.tiny else args.model
    return args


def variants(spec: Spec, args: Any) -> list[Spec]:
    """One spec per lit_sft side asked for."""
    specs = [spec]
    specs += [replace(spec, compile=True)] if args.compile else []
    specs += [replace(spec, packing=True)] if args.packing else []
    specs += [replace(spec, checkpointing=True)] if args.checkpointing else []
    specs += [replace(spec, precision=args.precision)] if args.precision != "32-true" else []
    specs += [replace(spec, lora_rank=args.lora_rank)] if args.lora_rank else []
    return specs


def run_sides(spec: Spec, args: Any) -> dict[str, list[dict[str, Any]]]:
    """Each side, in turn (never two at once on 2 cores), `--rounds` times."""
    sides = {"book": (book_side, spec)} if spec.book_dir else {}
    sides |= {lit_name(s): (lit_side, s) for s in variants(spec, args)}
    if args.lightning:
        sides["lightning"] = (lightning_side, spec)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in sides}
    for _ in range(args.rounds):
        for name, (function, side_spec) in sides.items():
            run = function(side_spec) if args.same_process else common.in_child(function, side_spec)
            runs[name].append(run)
    return runs


def summarize(rounds: list[dict[str, Any]], warmup: int) -> dict[str, Any]:
    """The fastest round's median step, positions/s and memory, over the steps after the warm-up;
    other processes can only slow a round down, so the fastest is the least disturbed."""
    timed = slice(min(warmup, len(rounds[0]["step_s"]) - 1), None)
    run = min(rounds, key=lambda r: statistics.median(r["step_s"][timed]))
    seconds = sum(run["step_s"][timed])
    return common.side(
        statistics.median(run["step_s"][timed]),
        sum(run["padded_tokens"][timed]) / seconds,
        run["peak_mib"],
        targets_per_s=sum(run["target_tokens"][timed]) / seconds,
        median_optimizer_s=statistics.median(run["optimizer_s"][timed] or [0.0]),
        train_peak_mib=run["train_peak_mib"],
        other_cpu=run["other_cpu"],
        trainable_parameters=run["trainable_parameters"],
        round_median_step_s=[statistics.median(r["step_s"][timed]) for r in rounds],
        losses=run["losses"],
    )


def checked_steps(name: str, steps: int) -> int:
    """How many of a side's losses must equal the book's: all, only the first (LoRA trains other
    parameters from there on) or none (bf16 rounds differently)."""
    return 0 if "bf16" in name else 1 if "lora" in name else steps


def compare(name: str, book: list[dict[str, Any]], other: list[dict[str, Any]]) -> dict[str, Any]:
    """Whether a side saw the book's batches in every round, and how far apart their losses are."""
    pairs = list(zip(book, other, strict=True))
    steps = checked_steps(name, len(book[0]["losses"]))
    diffs = [
        abs(x - y)
        for b, o in pairs
        for x, y in zip(b["losses"][:steps], o["losses"][:steps], strict=True)
    ]
    return {
        "checked": all(b["digests"] == o["digests"] for b, o in pairs) and bool(diffs),
        "max_abs_loss_diff": max(diffs, default=0.0),
        "steps_checked": steps,
    }


def seeded_spec(
    args: argparse.Namespace, book: common.Book | None, tmp: str, **options: Any
) -> Spec:
    """The Spec of `--model`, `--data`, `--batch-size`, `--steps`, `--threads`, on weights seeded
    in the folder `tmp`; `options`: the other fields."""
    config = common.model_config(args.model)
    return Spec(
        book_dir=book.dir if book else None,
        data=args.data,
        weights=common.seeded_weights(Path(tmp) / "init.safetensors", config, book),
        config=config,
        batch_size=args.batch_size,
        steps=args.steps,
        threads=args.threads,
        **options,
    )


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Runs the comparison, prints the table and the JSON line; exits 1 if the losses disagree."""
    args = parse_args(argv)
    book = common.setup(args)
    with tempfile.TemporaryDirectory() as tmp:
        spec = seeded_spec(
            args,
            book,
            tmp,
            shuffle=args.shuffle,
            mask_instructions=args.mask_instructions,
            random_length=args.length,
            lora_alpha=args.lora_alpha,
            keep_freed_memory=args.keep_freed_memory,
        )
        runs = run_sides(spec, args)
    sides = {name: summarize(rounds, args.warmup) for name, rounds in runs.items()}
    data = f"random rows x {args.length}" if args.length else "the book's batches"
    common.print_sides(
        f"{args.model}, batch {args.batch_size} of {data}, {args.steps} steps ({args.warmup} "
        f"warm-up), best of {args.rounds} round(s); seconds a step",
        sides,
    )
    for name, s in sides.items():
        print(f"{name:<14} losses " + " ".join(f"{x:.5f}" for x in s["losses"]))
    book_runs = runs.get("book")
    checks = {n: compare(n, book_runs, r) for n, r in runs.items() if book_runs and n != "book"}
    failed = [
        n for n, c in checks.items() if c["checked"] and c["max_abs_loss_diff"] > LOSS_TOLERANCE
    ]
    for name, check in checks.items():
        # Masked targets (lit_sft masks the response header too) or shuffles differ by design.
        print(f"book vs {name}: max |loss diff| {check['max_abs_loss_diff']:.2e} over "
              f"{check['steps_checked']} step(s)"
              + ("" if check["checked"] else " (different batches: not checked)"))  # fmt: skip
    result = common.emit(
        "bench_train",
        args,
        book,
        sides,
        steps=args.steps,
        warmup=args.warmup,
        batch_size=args.batch_size,
        length=args.length,
        loss_checks=checks,
    )
    if failed:
        sys.exit(
            f"FAIL: losses of {', '.join(failed)} differ from the book's by > {LOSS_TOLERANCE}"
        )
    return result


if __name__ == "__main__":
    main()
