"""The book's whole chapter-7 recipe, book against lit_sft: training time and answering time.

    python -m benchmarks.bench_recipe [--model gpt2-medium] [--steps 3] [--threads 2]

Training (gpt2-medium, 2 epochs over the 935-entry train split, batch 8): each side trains
`--steps` steps (the first a warm-up) on the same first batches and weights, in its own process
(`bench_train`'s sides); a step's cost is close to linear in its positions (batch x length), so
each side's seconds per position times the positions of its full run's batches (every batch of
both epochs, drawn as each side draws them) extrapolates the run. lit_sft is extrapolated twice:
plain shuffled batches (the default) and `data.group_by_length=true`. Evaluation during training
is left out on both sides. MFU counts 6 x matmul parameters + attention per target token over
the fp32 GEMM rate `../shared/bench/peak_flops.py` measures in this invocation.

Answering the 110 test prompts at `--new-tokens` new tokens, greedy, same random weights: the
book's `generate` (no cache, one prompt at a time) answers `--book-prompts` prompts with
`--book-new-tokens` tokens, extrapolated per processed position to the full answers; lit_sft
answers the first (longest-prompt) `--lit-batches` batches of the sorted prompts in full, scaled
to all batches, so an upper bound. Prints a table, then one JSON line. Every figure but the
measured steps is an extrapolation, and the table says so.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from benchmarks import bench_train as bt
from benchmarks.bench_generate import (
    book_generation,
    cached_batched,
    positions_processed,
    prompt_tokens,
)
from lit_sft.checkpoints import load_model
from lit_sft.tokenizer import IGNORE_INDEX

EPOCHS = 2


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", default="gpt2-medium", choices=["tiny", "gpt2-small", "gpt2-medium"]
    )
    parser.add_argument("--steps", type=int, default=3, help="measured sample, warm-up included")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--book-prompts", type=int, default=1)
    parser.add_argument("--book-new-tokens", type=int, default=8)
    parser.add_argument("--lit-batches", type=int, default=1)
    parser.add_argument("--answer-batch-size", type=int, default=32, help="evaluate's batch_size")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--data", default=str(bt.SHARED / "data" / "instruction-data.json"))
    parser.add_argument("--ref-dir", default=str(bt.SHARED / "bench" / "ref"))
    return parser.parse_args(argv)


def book_batches(spec: bt.Spec) -> list[tuple[int, int]]:
    """(positions, target tokens) of every batch of the book's 2 epochs, in its shuffle."""
    bt.import_reference(spec.ref_dir)
    from functools import partial

    import bench_common as bc
    from instruction_finetuning import InstructionDataset, custom_collate_fn
    from torch.utils.data import DataLoader

    loader = DataLoader(
        InstructionDataset(bc.load_splits(spec.data)[0], bc.get_tokenizer()),
        batch_size=spec.batch_size,
        collate_fn=partial(custom_collate_fn, allowed_max_length=bt.BOOK_ALLOWED_MAX_LENGTH),
        shuffle=True,
        drop_last=True,
    )
    torch.manual_seed(123)  # as the book seeds before training
    return [(x.numel(), int((y != IGNORE_INDEX).sum())) for _ in range(EPOCHS) for x, y in loader]


def lit_batches(spec: bt.Spec, group_by_length: bool) -> list[tuple[int, int]]:
    """(positions, target tokens) of every batch of lit_sft's 2 epochs (default seed)."""
    datamodule = bt.lit_datamodule(replace(spec, shuffle=True))
    datamodule.group_by_length = group_by_length
    loader = datamodule.train_dataloader()
    return [
        (b["input_ids"].numel(), int((b["targets"] != IGNORE_INDEX).sum()))
        for _ in range(EPOCHS)
        for b in loader
    ]


def flops_per_target(config: dict[str, Any], length: float) -> float:
    """Training FLOPs per target token: 6 x the matmul parameters + the attention products."""
    d, layers, vocab = config["emb_dim"], config["n_layers"], config["vocab_size"]
    matmul_params = layers * 12 * d * d + d * vocab  # blocks' projections and the output head
    return 6 * matmul_params + 12 * layers * d * length


def extrapolate(
    run: dict[str, Any], batches: list[tuple[int, int]], spec: bt.Spec, peak: float
) -> dict[str, float]:
    """The full run's time from the measured steps' seconds per position; MFU on its targets."""
    measured = slice(1, None)
    seconds = sum(run["step_s"][measured])
    per_position = seconds / sum(run["padded_tokens"][measured])
    positions = sum(p for p, _ in batches)
    targets = sum(t for _, t in batches)
    total = per_position * positions
    length = positions / len(batches) / spec.batch_size
    flops = flops_per_target(spec.config, length) * targets
    return {
        "measured_step_s": seconds / len(run["step_s"][measured]),
        "steps": len(batches),
        "positions": positions,
        "target_share": targets / positions,
        "targets": targets,
        "minutes": total / 60,
        "target_tokens_per_s": targets / total,
        "mfu": flops / total / peak,
    }


# peak_flops.py's own shapes: its peak is the best median over them.
PEAK_SHAPES = [(1024, 1024, 1024), (2048, 2048, 2048), (4096, 4096, 4096), (1024, 768, 2304),
               (1024, 768, 3072), (1024, 768, 50257), (1024, 1024, 4096)]  # fmt: skip


def gemm_peak(ref_dir: str) -> float:
    """The fp32 GEMM FLOP/s `../shared/bench/peak_flops.py` calls the peak: the best median of
    its square and GPT-2-shaped products."""
    sys.path.insert(0, str(Path(ref_dir).parent))
    bt.import_reference(ref_dir)
    from peak_flops import bench

    return max(bench(m, k, n, repeats=5)["gflops_median"] for m, k, n in PEAK_SHAPES) * 1e9


def answering(
    args: argparse.Namespace, weights: str, config: dict[str, Any]
) -> dict[str, dict[str, float]]:
    """Seconds to answer all test prompts, each side extrapolated from its sample."""
    prompts = prompt_tokens(args.data, "alpaca", 110)
    model = load_model(dict(config), Path(weights))
    sample = prompts[: args.book_prompts]
    book = book_generation(model, sample, args.book_new_tokens)
    start = time.perf_counter()
    book()
    book_s = time.perf_counter() - start

    book_total = (
        book_s
        / positions_processed(sample, args.book_new_tokens)
        * positions_processed(prompts, args.new_tokens)
    )
    order = sorted(prompts, key=len, reverse=True)
    size = args.answer_batch_size
    lit_sample = order[: size * args.lit_batches]
    start = time.perf_counter()
    cached_batched(model, lit_sample, args.new_tokens, size)
    lit_s = time.perf_counter() - start
    lit_total = lit_s * -(-len(prompts) // size) / -(-len(lit_sample) // size)
    return {
        "book": {"sample_s": book_s, "minutes": book_total / 60},
        "lit_sft": {"sample_s": lit_s, "minutes": lit_total / 60},
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Runs both sides, prints the table and the JSON line."""
    args = parse_args(argv)
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(bt.SHARED / "tiktoken-cache"))
    if args.threads:
        torch.set_num_threads(args.threads)
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        spec = bt.spec_from_initial_weights(
            tmp,
            args.ref_dir,
            args.model,
            data=args.data,
            batch_size=args.batch_size,
            steps=args.steps,
            threads=args.threads,
        )
        runs = bt.run_sides(spec, lightning=False, rounds=1)
        peak = gemm_peak(args.ref_dir)
        answers = answering(args, spec.weights, spec.config)
    check = bt.compare(runs["book"], runs["lit_sft"])
    other_cpu = {side: rounds[0]["other_cpu_frac"] for side, rounds in runs.items()}
    training = {
        "book": extrapolate(runs["book"][0], book_batches(spec), spec, peak),
        "lit_sft": extrapolate(runs["lit_sft"][0], lit_batches(spec, False), spec, peak),
        "lit_sft grouped": extrapolate(runs["lit_sft"][0], lit_batches(spec, True), spec, peak),
    }
    print(
        f"{args.model}, the book's recipe ({EPOCHS} epochs, batch {args.batch_size}) from "
        f"{args.steps - 1} measured steps per side, extrapolated; {torch.get_num_threads()} "
        f"threads; fp32 GEMM {peak / 1e9:.0f} GFLOP/s; load {load_start[0]:.2f} -> "
        f"{os.getloadavg()[0]:.2f}; other processes' CPU share while each side trained: "
        + ", ".join(f"{side} {other:.3f}" for side, other in other_cpu.items())
    )
    print(
        f"{'':<16}{'train min':>10}{'tgt tok/s':>11}{'targets %':>10}{'MFU':>6}{'answer min':>12}"
    )
    for side, row in training.items():
        answer = answers["book" if side == "book" else "lit_sft"]["minutes"]
        print(
            f"{side:<16}{row['minutes']:>10.1f}{row['target_tokens_per_s']:>11.1f}"
            f"{100 * row['target_share']:>9.1f}%{row['mfu']:>6.2f}{answer:>12.1f}"
        )
    book_total = training["book"]["minutes"] + answers["book"]["minutes"]
    for side in ("lit_sft", "lit_sft grouped"):
        ours = training[side]["minutes"] + answers["lit_sft"]["minutes"]
        print(
            f"{side}: train + answer {ours:.1f} min, the book {book_total:.1f} min: "
            f"{book_total / ours:.1f}x"
        )
    print(f"losses of the measured steps: max |book - lit_sft| {check['max_abs_loss_diff']:.1e}")
    result = {
        "bench": "bench_recipe",
        "model": args.model,
        "measured_steps": args.steps - 1,
        "extrapolated": True,
        "threads": torch.get_num_threads(),
        "gemm_flops_per_s": peak,
        "loadavg_start_end": [load_start[0], os.getloadavg()[0]],
        "other_cpu_frac": other_cpu,
        "loss_check": check,
        "training": training,
        "answering": answers,
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
