"""Peak memory and step time of full finetuning, with and without activation checkpointing.

    python -m benchmarks.bench_memory --model gpt2-large --batch-size 4 --length 512 [--steps 1]

Random weights (seed 123) and random tokens, every position a target; each setting trains
`--steps` AdamW steps (the module's optimizer and `sft_step`, as a run does) in its own spawned
process, so its peak resident memory (`VmHWM`) is its own. `--precision bf16-mixed` runs the
forward under CPU autocast to bfloat16, as Lightning's `trainer.precision=bf16-mixed` does, and
compares it with fp32 instead. Each process keeps freed memory as `train.py` does
(`--no-keep-freed-memory`: as `keep_freed_memory=false`). Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import asdict
from typing import Any

import torch

from benchmarks.bench_generate import model_config
from benchmarks.bench_train import in_child, vm_hwm_mib
from lit_sft.allocator import keep_freed_memory
from lit_sft.training.sft import InstructionModule
from lit_sft.training.steps import sft_step


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gpt2-large", help="a size in conf/model")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--length", type=int, default=512)
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument(
        "--precision",
        choices=["32-true", "bf16-mixed"],
        default=None,
        help="compare fp32 with this (instead of checkpointing off/on)",
    )
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--keep-freed-memory", action=argparse.BooleanOptionalAction, default=True)
    return parser.parse_args(argv)


def train_steps(
    model_name: str,
    batch_size: int,
    length: int,
    steps: int,
    checkpointing: bool,
    precision: str,
    threads: int | None,
    keep_freed: bool,
) -> dict[str, Any]:
    """`steps` training steps in this (fresh) process: losses, step times, peak memory."""
    if keep_freed:
        keep_freed_memory()
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(123)
    module = InstructionModule(
        asdict(model_config(model_name)), activation_checkpointing=checkpointing
    )
    module.model.train()
    optimizer = module.configure_optimizers()["optimizer"]
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 50257, (batch_size, length + 1), generator=generator)
    batch = {"input_ids": tokens[:, :-1], "targets": tokens[:, 1:]}
    autocast = (
        torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16-mixed" else nullcontext()
    )
    losses, seconds = [], []
    for _ in range(steps):
        start = time.perf_counter()
        with autocast:
            loss = sft_step(module.model, optimizer, batch, scale=1 / batch["targets"].numel())
        seconds.append(time.perf_counter() - start)
        losses.append(float(loss) / batch["targets"].numel())
    return {"losses": losses, "step_s": seconds, "peak_rss_mib": vm_hwm_mib()}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Runs both settings, one process each, and prints a table and a JSON line."""
    args = parse_args(argv)
    if args.precision is None:
        settings = {"plain": (False, "32-true"), "checkpointed": (True, "32-true")}
    else:
        settings = {"32-true": (False, "32-true"), args.precision: (False, args.precision)}
    load_start = os.getloadavg()
    results = {
        name: in_child(
            train_steps,
            args.model,
            args.batch_size,
            args.length,
            args.steps,
            checkpointing,
            precision,
            args.threads,
            args.keep_freed_memory,
        )
        for name, (checkpointing, precision) in settings.items()
    }
    print(
        f"{args.model}, batch {args.batch_size} x {args.length}, {args.steps} step(s), "
        f"keep_freed_memory={args.keep_freed_memory}, load "
        f"{load_start[0]:.2f} -> {os.getloadavg()[0]:.2f}"
    )
    print(f"{'':<14}{'peak MiB':>10}{'step s':>9}  losses")
    for name, r in results.items():
        print(
            f"{name:<14}{r['peak_rss_mib']:>10.0f}{min(r['step_s']):>9.2f}  "
            + " ".join(f"{x:.5f}" for x in r["losses"])
        )
    result = {
        "bench": "bench_memory",
        "model": args.model,
        "batch_size": args.batch_size,
        "length": args.length,
        "steps": args.steps,
        "keep_freed_memory": args.keep_freed_memory,
        "loadavg_start_end": [load_start[0], os.getloadavg()[0]],
        "results": results,
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
