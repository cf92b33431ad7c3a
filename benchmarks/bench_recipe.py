"""The book's whole chapter-7 recipe, book against lit_sft: training time and answering time.

    python -m benchmarks.bench_recipe [--model gpt2-medium] [--steps 3] [--threads 2]

Training (2 epochs, batch 8): each side trains `--steps` steps (the first a warm-up) on the same
batches and weights (`bench_train`'s sides); a step costs about its positions, so its seconds per
position times the positions of its full run's batches (both epochs, shuffled as the side
shuffles) extrapolates the run; lit_sft twice, plain and `data.group_by_length=true`. MFU: 6 x
matmul parameters + attention per target token over the GEMM peak measured here. Answering the
110 test prompts: the book's `generate` on `--book-prompts` x `--book-new-tokens`, scaled per
processed position; lit_sft `--lit-batches` full batches of the longest prompts, scaled. Every
figure but the measured steps is an extrapolation.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import torch

from benchmarks import answers as a
from benchmarks import bench_train, common
from benchmarks.steps import Spec, book_loader, lit_datamodule
from lit_sft.tokenizer import IGNORE_INDEX

EPOCHS = 2
TEST_PROMPTS = 110


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = common.parser(__doc__, model="gpt2-medium")
    p.add_argument("--steps", type=int, default=3, help="measured sample, warm-up included")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--new-tokens", type=int, default=256)
    p.add_argument("--book-prompts", type=int, default=1)
    p.add_argument("--book-new-tokens", type=int, default=8)
    p.add_argument("--lit-batches", type=int, default=1)
    p.add_argument("--answer-batch-size", type=int, default=32, help="evaluate's batch_size")
    p.add_argument("--peak-size", type=int, default=None, help="peak from one N^3 product only")
    p.add_argument("--same-process", action="store_true", help="no spawn (a quick check)")
    return p.parse_args(argv)


def recipe_batches(spec: Spec, side: str) -> list[tuple[int, int]]:
    """(positions, target tokens) of every batch of a side's 2 epochs, shuffled as it shuffles."""
    if side == "book":
        torch.manual_seed(123)  # as the book seeds before training
        pairs = [(x, y) for _ in range(EPOCHS) for x, y in book_loader(replace(spec, shuffle=True))]
    else:
        loader = lit_datamodule(
            replace(spec, shuffle=True), group_by_length=side == "lit_sft grouped"
        ).train_dataloader()
        pairs = [(b["input_ids"], b["targets"]) for _ in range(EPOCHS) for b in loader]
    return [(x.numel(), int((y != IGNORE_INDEX).sum())) for x, y in pairs]


def flops_per_target(config: dict[str, Any], length: float) -> float:
    """Training FLOPs per target token: 6 x the matmul parameters + the attention products."""
    d, layers, vocab = config["emb_dim"], config["n_layers"], config["vocab_size"]
    return 6 * (layers * 12 * d * d + d * vocab) + 12 * layers * d * length


def extrapolate(run: dict[str, Any], batches: list[tuple[int, int]], spec: Spec, peak: float):
    """The full run's time from the measured steps' seconds per position; MFU on its targets."""
    per_position = sum(run["step_s"][1:]) / sum(run["padded_tokens"][1:])
    positions, targets = sum(p for p, _ in batches), sum(t for _, t in batches)
    seconds = per_position * positions
    length = positions / len(batches) / spec.batch_size
    return {
        "steps": len(batches),
        "target_share": targets / positions,
        "minutes": seconds / 60,
        "target_tokens_per_s": targets / seconds,
        "mfu": flops_per_target(spec.config, length) * targets / seconds / peak,
    }


def answering(args: argparse.Namespace, book: common.Book | None, spec: Spec) -> dict[str, float]:
    """Minutes to answer all test prompts, each side extrapolated from its sample."""
    prompts = a.prompt_tokens(args.data, TEST_PROMPTS)
    minutes = {}
    if book is not None:
        sample = prompts[: args.book_prompts]
        run = a.book_answers(book, spec.config, spec.weights)
        seconds = common.timed(lambda: run(sample, args.book_new_tokens))[1]
        stretch = a.positions_processed(prompts, args.new_tokens) / a.positions_processed(
            sample, args.book_new_tokens
        )
        minutes["book"] = seconds * stretch / 60
    size = args.answer_batch_size
    sample = sorted(prompts, key=len, reverse=True)[: size * args.lit_batches]
    model = a.lit_model(spec.config, spec.weights)
    seconds = common.timed(lambda: a.cached_batched(model, sample, args.new_tokens, size))[1]
    minutes["lit_sft"] = seconds * -(-len(prompts) // size) / -(-len(sample) // size) / 60
    return minutes


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Runs both sides, prints the table and the JSON line."""
    args = parse_args(argv)
    book = common.setup(args)
    train_args = bench_train.parse_args(["--same-process"] if args.same_process else [])
    with tempfile.TemporaryDirectory() as tmp:
        spec = bench_train.seeded_spec(args, book, tmp)
        runs = {name: rounds[0] for name, rounds in bench_train.run_sides(spec, train_args).items()}
        peak = common.gemm_peak(book, [(args.peak_size,) * 3] if args.peak_size else None)
        answers = answering(args, book, spec)
    training = {
        name: extrapolate(runs[name.split()[0]], recipe_batches(spec, name), spec, peak)
        for name in [*runs, "lit_sft grouped"]
    }
    sides = {
        name: common.side(
            60 * (row["minutes"] + answers[name.split()[0]]),
            row["target_tokens_per_s"],
            runs[name.split()[0]]["peak_mib"],
            **row,
            answer_minutes=answers[name.split()[0]],
        )
        for name, row in training.items()
    }
    checks = (
        {"lit_sft": bench_train.compare("lit_sft", [runs["book"]], [runs["lit_sft"]])}
        if book
        else {}
    )
    common.print_sides(
        f"{args.model}, the book's recipe ({EPOCHS} epochs, batch {args.batch_size}, then "
        f"{TEST_PROMPTS} answers x {args.new_tokens} tokens), extrapolated from {args.steps - 1} "
        f"measured steps a side; fp32 GEMM peak {peak / 1e9:.0f} GFLOP/s; seconds train + answer; "
        "tokens/s: training's target tokens",
        sides,
    )
    for name, row in training.items():
        print(f"{name:<16} train {row['minutes']:.1f} min, MFU {row['mfu']:.2f}, "
              f"answer {sides[name]['answer_minutes']:.1f} min")  # fmt: skip
    return common.emit(
        "bench_recipe",
        args,
        book,
        sides,
        measured_steps=args.steps - 1,
        extrapolated=True,
        gemm_flops_per_s=peak,
        other_cpu={name: run["other_cpu"] for name, run in runs.items()},
        loss_checks=checks,
    )


if __name__ == "__main__":
    main()
