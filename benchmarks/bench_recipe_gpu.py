"""The book's recipe run in full on a GPU: the book's code against `train.py` and `evaluate.py`.

    python -m benchmarks.bench_recipe_gpu [--model gpt2-medium] [--book-prompts 10]

Whole runs, nothing extrapolated but the book's answers. Both sides start from the same random
weights (seed 123, the book's `GPTModel`, saved in Hugging Face naming).

- Training. The book: chapter 7 as published, timed around `train_model_simple` (2 epochs, batch
  8, shuffled, AdamW 5e-5 / 0.1, evaluation every 5 steps on 5 batches, a sample after each
  epoch; fp32). lit_sft: `python train.py` with the same settings (its defaults), at its GPU
  default precision (`auto`: bf16-mixed; `--precisions auto 32-true` adds fp32), each its own
  process, timed by its summary (`wall_time_s`: the fit) and as a whole process. About 4 minutes
  of an H200 with the defaults.
- Answering the 110 test prompts at 256 new tokens, greedy. The book: its `generate` (no cache,
  one prompt at a time) on the first `--book-prompts` prompts, scaled to all (said so). lit_sft:
  `python evaluate.py` answering all of them, as its `eval-summary.json` reports.
- MFU: 6 x matmul parameters + attention per target token (as `bench_recipe`), over the dense GEMM
  rate of the side's precision measured here (fp32 without TF32, as the book runs; bf16).

Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch

from benchmarks import bench_train as bt
from benchmarks.bench_recipe import EPOCHS, book_batches, flops_per_target


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model",
        default="gpt2-medium",
        choices=["tiny", "gpt2-small", "gpt2-medium", "gpt2-large"],
    )
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--book-prompts", type=int, default=10)
    parser.add_argument(
        "--answer-batch-sizes", type=int, nargs="+", default=[32], help="evaluate's batch_size"
    )
    parser.add_argument(
        "--precisions", nargs="+", default=["auto"], help="train.py's trainer.precision, each a run"
    )
    parser.add_argument(
        "--variants",
        nargs="*",
        default=[],
        help="more train.py runs, each a quoted string of overrides (e.g. 'module.compile=true')",
    )
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--entries", type=int, default=None, help="the first N entries (a check)")
    parser.add_argument("--data", default=str(bt.SHARED / "data" / "instruction-data.json"))
    parser.add_argument("--ref-dir", default=str(bt.SHARED / "bench" / "ref"))
    return parser.parse_args(argv)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def gemm_rate(device: torch.device, dtype: torch.dtype, size: int = 8192) -> float:
    """FLOP/s of a square matrix product, the median of 10 after 3 warm-ups."""
    size = size if device.type == "cuda" else 1024
    a, b = (torch.randn(size, size, device=device, dtype=dtype) for _ in range(2))
    times = []
    for i in range(13):
        synchronize(device)
        start = time.perf_counter()
        a @ b
        synchronize(device)
        if i >= 3:
            times.append(time.perf_counter() - start)
    return 2 * size**3 / sorted(times)[len(times) // 2]


def peak_memory_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return bt.vm_hwm_mib()


def book_recipe(args: argparse.Namespace, weights: str, config: dict[str, Any]) -> dict[str, Any]:
    """The book's chapter-7 training and answering, timed; runs in its own process."""
    bt.import_reference(args.ref_dir)
    import bench_common as bc
    from instruction_finetuning import InstructionDataset, custom_collate_fn, format_input
    from previous_chapters import GPTModel, generate, text_to_token_ids, train_model_simple
    from torch.utils.data import DataLoader

    device = torch.device(args.device)
    train_data, test_data, val_data = bc.load_splits(args.data)
    tokenizer = bc.get_tokenizer()
    collate = partial(
        custom_collate_fn, device=device, allowed_max_length=bt.BOOK_ALLOWED_MAX_LENGTH
    )
    torch.manual_seed(123)
    train_loader = DataLoader(
        InstructionDataset(train_data, tokenizer),
        batch_size=8,
        collate_fn=collate,
        shuffle=True,
        drop_last=True,
    )
    val_loader = DataLoader(
        InstructionDataset(val_data, tokenizer), batch_size=8, collate_fn=collate, shuffle=False
    )
    model = GPTModel(config)
    bc.load_hf_safetensors(model, weights)
    model.to(device)
    torch.manual_seed(123)
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-5, weight_decay=0.1)
    synchronize(device)
    start = time.perf_counter()
    train_losses, val_losses, _ = train_model_simple(
        model, train_loader, val_loader, optimizer, device, num_epochs=EPOCHS,
        eval_freq=5, eval_iter=5, start_context=format_input(val_data[0]), tokenizer=tokenizer,
    )  # fmt: skip
    synchronize(device)
    train_s = time.perf_counter() - start
    peak = peak_memory_mib(device)

    bc.load_hf_safetensors(model, weights)  # answers of the untrained weights, as lit_sft's
    model.eval()
    prompts = test_data[: args.book_prompts]
    new_tokens = 0
    synchronize(device)
    start = time.perf_counter()
    for entry in prompts:
        idx = text_to_token_ids(format_input(entry), tokenizer).to(device)
        out = generate(
            model=model, idx=idx, max_new_tokens=args.new_tokens,
            context_size=config["context_length"], eos_id=50256,
        )  # fmt: skip
        new_tokens += out.shape[1] - idx.shape[1]
    synchronize(device)
    answer_s = time.perf_counter() - start
    return {
        "train_s": train_s,
        "final_train_loss": train_losses[-1],
        "final_val_loss": val_losses[-1],
        "peak_mib": peak,
        "answer_sample_prompts": len(prompts),
        "answer_sample_s": answer_s,
        "answer_sample_new_tokens": new_tokens,
        "answer_s_per_prompt": answer_s / len(prompts),
    }


def arch_overrides(config: dict[str, Any]) -> list[str]:
    """train.py/evaluate.py overrides that give the benchmark's model shape to any size."""
    return [f"model.arch.{key}={config[key]}" for key in ("emb_dim", "n_layers", "n_heads")]


def timed_command(command: list[str]) -> float:
    print("+", " ".join(command), file=sys.stderr, flush=True)
    start = time.perf_counter()
    subprocess.run(command, check=True)
    return time.perf_counter() - start


def lit_training(
    args: argparse.Namespace, weights: str, config: dict[str, Any], overrides: str, run: Path
) -> dict[str, Any]:
    """One `train.py` run of the recipe with `overrides` (space-separated); its summary and the
    process's wall time."""
    process_s = timed_command(
        [
            sys.executable, "train.py", "model=gpt2-medium", *arch_overrides(config),
            f"model.weights={weights}", f"data.path={args.data}",
            f"trainer.accelerator={'gpu' if args.device == 'cuda' else 'cpu'}",
            f"run_dir={run}", f"hydra.run.dir={run}", "logger=csv", "export_weights=false",
            *overrides.split(),
        ]
    )  # fmt: skip
    summary = json.loads((run / "summary.json").read_text())
    return {"process_s": process_s, **summary}


def lit_answering(
    args: argparse.Namespace, weights: str, config: dict[str, Any], batch_size: int, run: Path
) -> dict[str, Any]:
    """`evaluate.py` answering every test prompt (exact match: no judge); its generation figures."""
    process_s = timed_command(
        [
            sys.executable, "evaluate.py", "model=gpt2-medium", *arch_overrides(config),
            "prompt=alpaca", f"weights={weights}", f"data.path={args.data}", f"run_dir={run}",
            "scorer=exact_match", f"max_new_tokens={args.new_tokens}",
            f"batch_size={batch_size}", f"device={args.device}",
        ]
    )  # fmt: skip
    summary = json.loads((run / "eval" / "eval-summary.json").read_text())
    return {"process_s": process_s, **summary["generation"]}


def mfu(train_s: float, targets: int, length: float, config: dict[str, Any], peak: float) -> float:
    return flops_per_target(config, length) * targets / train_s / peak


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Runs every side, prints the table and the JSON line."""
    args = parse_args(argv)
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(bt.SHARED / "tiktoken-cache"))
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    peaks = {"fp32": gemm_rate(device, torch.float32), "bf16": gemm_rate(device, torch.bfloat16)}
    with tempfile.TemporaryDirectory() as tmp:
        if args.entries:
            entries = json.loads(Path(args.data).read_text())[: args.entries]
            args.data = str(Path(tmp) / "entries.json")
            Path(args.data).write_text(json.dumps(entries))
        # The book's batches (shuffled, batch 8) for the target-token count; one "step" is unused.
        spec = bt.spec_from_initial_weights(
            tmp, args.ref_dir, args.model, data=args.data, batch_size=8, steps=1, shuffle=True
        )
        weights, config = spec.weights, spec.config
        book = bt.in_child(book_recipe, args, weights, config)
        variants = [f"trainer.precision={p}" for p in args.precisions] + args.variants
        lit = {
            variant: lit_training(args, weights, config, variant, Path(tmp) / f"train-{i}")
            for i, variant in enumerate(variants)
        }
        answers = {
            size: lit_answering(args, weights, config, size, Path(tmp) / f"answers-{size}")
            for size in args.answer_batch_sizes
        }
        batches = book_batches(spec)
    targets = sum(t for _, t in batches)
    length = sum(p for p, _ in batches) / len(batches) / spec.batch_size
    auto_peak = peaks["bf16"] if device.type == "cuda" else peaks["fp32"]
    rows = {"book (fp32)": (book["train_s"], peaks["fp32"], book["peak_mib"])}
    for variant, run in lit.items():
        peak = peaks["fp32"] if "precision=32-true" in variant else auto_peak
        rows[f"lit_sft {variant}"] = (run["wall_time_s"], peak, run["peak_memory_mb"])
    print(
        f"{args.model} on {name}: the book's recipe ({EPOCHS} epochs, batch 8, {targets} target "
        f"tokens), whole runs; GEMM fp32 {peaks['fp32'] / 1e12:.1f} TFLOP/s, bf16 "
        f"{peaks['bf16'] / 1e12:.1f} TFLOP/s"
    )
    width = max(map(len, rows)) + 1
    print(f"{'':<{width}}{'train s':>9}{'tgt tok/s':>11}{'MFU':>7}{'peak MiB':>10}{'speed-up':>10}")
    for side, (seconds, peak, memory) in rows.items():
        print(
            f"{side:<{width}}{seconds:>9.1f}{targets / seconds:>11.0f}"
            f"{mfu(seconds, targets, length, config, peak):>7.3f}{memory:>10.0f}"
            f"{book['train_s'] / seconds:>9.2f}x"
        )
    for size, answer in answers.items():
        book_s = book["answer_s_per_prompt"] * answer["answers"]
        print(
            f"answering {answer['answers']} prompts x {args.new_tokens} tokens: the book "
            f"{book_s:.1f} s (scaled from {book['answer_sample_prompts']} prompts), lit_sft "
            f"{answer['seconds']:.1f} s ({answer['tokens_per_sec']:.0f} tokens/s, batch {size}): "
            f"{book_s / answer['seconds']:.1f}x"
        )
    result = {
        "bench": "bench_recipe_gpu",
        "model": args.model,
        "device": name,
        "torch": torch.__version__,
        "gemm_flops_per_s": peaks,
        "targets": targets,
        "book": book,
        "lit_sft": lit,
        "answering": answers,
        "mfu": {side: mfu(s, targets, length, config, p) for side, (s, p, _) in rows.items()},
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
