"""The book's recipe run in full on a GPU: the book's code against `train.py` and `evaluate.py`.

    python -m benchmarks.bench_recipe_gpu [--model gpt2-medium] [--book-prompts 10]
        [--precisions auto 32-true] [--variants "module.compile=true" ...]

Whole runs from the same random weights, nothing extrapolated but the book's answers. Training:
chapter 7's `train_model_simple` (2 epochs, batch 8, AdamW 5e-5 / 0.1, evaluation every 5 steps,
a sample each epoch; fp32) against `python train.py` (its defaults are the same) at each of
`--precisions` and with each of `--variants` (a quoted string of overrides), timed by its
summary's `wall_time_s`. Answering the 110 test prompts: the book's `generate` on
`--book-prompts`, scaled, against `python evaluate.py`. MFU over the GEMM rate of the side's
precision measured here (fp32 without TF32, as the book runs; bf16). `--device cpu --entries 16`
checks it all on a CPU.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from benchmarks import common
from benchmarks.bench_recipe import EPOCHS, flops_per_target, recipe_batches
from benchmarks.steps import Spec
from lit_sft.run_dir import EvalDir, RunDir


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = common.parser(__doc__, model="gpt2-medium")
    p.add_argument("--new-tokens", type=int, default=256)
    p.add_argument("--book-prompts", type=int, default=10)
    p.add_argument("--answer-batch-sizes", type=int, nargs="+", default=[32])
    p.add_argument("--precisions", nargs="*", default=["auto"], help="train.py's trainer.precision")
    p.add_argument("--variants", nargs="*", default=[], help="more train.py runs, each overrides")
    p.add_argument("--device", default="cuda")
    p.add_argument("--entries", type=int, default=None, help="the first N entries (a check)")
    return p.parse_args(argv)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def gemm_rate(device: torch.device, dtype: torch.dtype) -> float:
    """FLOP/s of a square matrix product, the median of 10 after 3 warm-ups."""
    size = 8192 if device.type == "cuda" else 512
    x, w = (torch.randn(size, size, device=device, dtype=dtype) for _ in range(2))
    return 2 * size**3 / common.median_seconds(lambda: (x @ w, synchronize(device)), 10, 3)


def book_recipe(args: argparse.Namespace, book: common.Book, spec: Spec) -> dict[str, Any]:
    """The book's chapter-7 training and answering, timed; runs in its own process."""
    from functools import partial

    from torch.utils.data import DataLoader

    chapter, chapters = book.module("instruction_finetuning"), book.module("previous_chapters")
    device = torch.device(args.device)
    train_data, test_data, val_data = book.module("bench_common").load_splits(spec.data)
    tokenizer = book.module("bench_common").get_tokenizer()
    collate = partial(chapter.custom_collate_fn, device=device, allowed_max_length=1024)
    torch.manual_seed(123)
    train, val = (
        DataLoader(chapter.InstructionDataset(d, tokenizer), batch_size=8, collate_fn=collate,
                   shuffle=shuffle, drop_last=shuffle)
        for d, shuffle in ((train_data, True), (val_data, False))
    )  # fmt: skip
    model = book.model(spec.config, spec.weights).to(device)
    torch.manual_seed(123)
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-5, weight_decay=0.1)
    synchronize(device)
    start = time.perf_counter()
    train_losses, val_losses, _ = chapters.train_model_simple(
        model, train, val, optimizer, device, num_epochs=EPOCHS, eval_freq=5, eval_iter=5,
        start_context=chapter.format_input(val_data[0]), tokenizer=tokenizer,
    )  # fmt: skip
    synchronize(device)
    train_s = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else 0.0
    book.module("bench_common").load_hf_safetensors(model, spec.weights)  # as lit_sft answers
    model.eval()
    prompts = test_data[: args.book_prompts]
    synchronize(device)
    start = time.perf_counter()
    for entry in prompts:
        ids = chapters.text_to_token_ids(chapter.format_input(entry), tokenizer).to(device)
        chapters.generate(model, ids, args.new_tokens, spec.config["context_length"], eos_id=50256)
    synchronize(device)
    return {
        "train_s": train_s,
        "final_val_loss": val_losses[-1],
        "peak_mib": peak or common.peak_mib(),
        "answer_s_per_prompt": (time.perf_counter() - start) / len(prompts),
    }


def run_entry_point(script: str, args: Any, run: Path, overrides: list[str]) -> dict[str, Any]:
    """`python <script>` on `--model` and `--data` with `overrides`; its summary file."""
    command = [sys.executable, script, f"model={args.model}", f"data.path={args.data}",
               f"run_dir={run}", *overrides]  # fmt: skip
    print("+", " ".join(command), file=sys.stderr, flush=True)
    subprocess.run(command, check=True, cwd=common.REPO)
    if script == "train.py":
        return RunDir(run).read_summary()
    return EvalDir(run / "eval").read_latest_summary()


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Runs every side, prints the table and the JSON line."""
    args = parse_args(argv)
    book = common.setup(args)
    device = torch.device(args.device)
    peaks = {"fp32": gemm_rate(device, torch.float32), "bf16": gemm_rate(device, torch.bfloat16)}
    accelerator = "gpu" if device.type == "cuda" else "cpu"
    config = common.model_config(args.model)
    with tempfile.TemporaryDirectory() as tmp:
        if args.entries:
            entries = json.loads(Path(args.data).read_text())[: args.entries]
            args.data = str(Path(tmp) / "entries.json")
            Path(args.data).write_text(json.dumps(entries))
        weights = common.seeded_weights(Path(tmp) / "init.safetensors", config, book)
        spec = Spec(book.dir if book else None, args.data, weights, config, 8, 1)
        runs: dict[str, tuple[dict[str, Any], float]] = {}
        if book is not None:
            result = common.in_child(book_recipe, args, book, spec)
            runs["book"] = ({**result, "wall_time_s": result["train_s"]}, peaks["fp32"])
        for i, variant in enumerate(
            [f"trainer.precision={p}" for p in args.precisions] + args.variants
        ):
            overrides = [f"model.weights={weights}", f"trainer.accelerator={accelerator}",
                         f"hydra.run.dir={Path(tmp) / f'train-{i}'}", "logger=csv",
                         "export_weights=false", *variant.split()]  # fmt: skip
            summary = run_entry_point("train.py", args, Path(tmp) / f"train-{i}", overrides)
            fp32 = "32-true" in variant or device.type != "cuda"
            runs[f"lit_sft {variant}"] = (summary, peaks["fp32" if fp32 else "bf16"])
        answers = {
            size: run_entry_point("evaluate.py", args, Path(tmp) / f"answers-{size}",
                                  ["prompt=alpaca", f"weights={weights}", "scorer=exact_match",
                                   f"max_new_tokens={args.new_tokens}", f"batch_size={size}",
                                   f"device={args.device}"])["timing"]["generated"]
            for size in args.answer_batch_sizes
        }  # fmt: skip
        batches = recipe_batches(spec, "book") if book else recipe_batches(spec, "lit_sft")
    targets = sum(t for _, t in batches)
    flops = flops_per_target(config, sum(p for p, _ in batches) / len(batches) / 8) * targets
    sides = {
        name: common.side(
            run["wall_time_s"],
            targets / run["wall_time_s"],
            run.get("peak_mib") or run["peak_memory_mb"],
            mfu=flops / run["wall_time_s"] / peak,
        )
        for name, (run, peak) in runs.items()
    }
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    common.print_sides(
        f"{args.model} on {name}: the book's recipe ({EPOCHS} epochs, batch 8, {targets} target "
        f"tokens), whole runs; seconds of training; GEMM fp32 {peaks['fp32'] / 1e12:.2f}, bf16 "
        f"{peaks['bf16'] / 1e12:.2f} TFLOP/s",
        sides,
    )
    for size, answer in answers.items():
        book_s = runs["book"][0]["answer_s_per_prompt"] * answer["answers"] if book else None
        print(f"answering {answer['answers']} prompts x {args.new_tokens} tokens, batch {size}: "
              f"lit_sft {answer['seconds']:.1f} s, the book {book_s or float('nan'):.1f} s "
              f"(scaled from {args.book_prompts} prompts)")  # fmt: skip
    return common.emit(
        "bench_recipe_gpu", args, book, sides, device=name, targets=targets,
        gemm_flops_per_s=peaks, answering=answers,
        book_run=runs["book"][0] if book else None,
    )  # fmt: skip


if __name__ == "__main__":
    main()
