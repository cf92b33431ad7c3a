"""LoRA against full finetuning: lit_sft's training step on the same weights and the same batches.

    python benchmarks/bench_lora.py --model gpt2-small --steps 6 --rank 16

One invocation: random GPT-2 weights (the book's model, seed 123) are written once; then, each in
its own freshly spawned process (so peak memory is its own), full finetuning (`bench_train`'s
lit_sft side) and LoRA (the same step after `add_adapters`) run the first `--steps` batches of
the book's set in file order. Step 0 is the same model on both sides, so its losses must agree.
Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import torch
from bench_train import (
    SHARED,
    Run,
    Spec,
    endless,
    import_reference,
    in_child,
    lit_datamodule,
    lit_side,
    measured,
    spec_from_initial_weights,
    time_steps,
    vm_hwm_mib,
)
from torch import Tensor

from lit_sft.checkpoints import load_weights
from lit_sft.lora import LoRAConfig, add_adapters, trainable_parameters
from lit_sft.tokenizer import IGNORE_INDEX
from lit_sft.training.losses import sft_step
from lit_sft.training.sft import InstructionModule

WARMUP = 1  # the first step allocates; it is left out of the medians


def lora_side(spec: Spec, lora: LoRAConfig) -> dict[str, Any]:
    """`bench_train.lit_side` with LoRA adapters on the loaded weights, timed."""
    import_reference(spec.ref_dir)
    if spec.threads:
        torch.set_num_threads(spec.threads)
    batches = endless(lit_datamodule(spec).train_dataloader())
    module = InstructionModule(spec.config, lr=spec.lr, weight_decay=spec.weight_decay)
    load_weights(module.model, spec.weights)
    add_adapters(module.model, lora)
    module.train()
    optimizer = module.configure_optimizers()["optimizer"]

    def step(batch: dict[str, Tensor], mark: Callable[[], None]) -> Tensor:
        tokens = (batch["targets"] != IGNORE_INDEX).sum().float().clamp(min=1)
        loss_sum = sft_step(module.model, optimizer, batch, scale=1 / tokens, before_step=mark)
        return loss_sum / tokens

    run = Run(f"lora r{lora.rank}", peak_rss_mib=vm_hwm_mib())
    result = measured(
        run,
        lambda: time_steps(
            run, batches, lambda b: (b["input_ids"], b["targets"]), step, spec.steps
        ),
    )
    result["trainable_parameters"] = trainable_parameters(module.model)
    return result


def full_side(spec: Spec) -> dict[str, Any]:
    """`bench_train.lit_side` (full finetuning), with its trainable-parameter count."""
    result = lit_side(spec)
    module = InstructionModule(spec.config)
    result["trainable_parameters"] = trainable_parameters(module.model)
    return result


def summary(run: dict[str, Any]) -> dict[str, Any]:
    steps = run["step_s"][WARMUP:]
    tokens = run["padded_tokens"][WARMUP:]
    return {
        "side": run["side"],
        "median_step_s": statistics.median(steps),
        "tokens_per_s": sum(tokens) / sum(steps),
        "peak_rss_mib": run["peak_rss_mib"],
        "train_peak_rss_mib": run["train_peak_rss_mib"],
        "trainable_parameters": run["trainable_parameters"],
        "losses": run["losses"],
        "other_cpu_frac": run["other_cpu_frac"],
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gpt2-small")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--alpha", type=float, default=32)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--ref-dir", default=str(SHARED / "bench" / "ref"))
    parser.add_argument("--data", default=str(SHARED / "data" / "instruction-data.json"))
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        spec = spec_from_initial_weights(
            tmp,
            args.ref_dir,
            args.model,
            data=args.data,
            batch_size=args.batch_size,
            steps=args.steps,
            threads=args.threads,
        )
        # Dropout 0 so both sides compute the same step-0 loss; it costs LoRA nothing measurable.
        lora = LoRAConfig(rank=args.rank, alpha=args.alpha, dropout=0.0)
        full = summary(in_child(full_side, replace(spec)))
        adapted = summary(in_child(lora_side, spec, lora))
    print(f"{'':<10}{'step s':>8}{'tok/s':>9}{'peak MiB':>10}{'train MiB':>11}{'trainable':>13}")
    for s in (full, adapted):
        print(
            f"{s['side']:<10}{s['median_step_s']:>8.3f}{s['tokens_per_s']:>9.1f}"
            f"{s['peak_rss_mib']:>10.0f}{s['train_peak_rss_mib'] or float('nan'):>11.0f}"
            f"{s['trainable_parameters']:>13,}"
        )
    ratios = {
        "speedup": full["median_step_s"] / adapted["median_step_s"],
        "peak_memory_ratio": adapted["peak_rss_mib"] / full["peak_rss_mib"],
        "step0_loss_diff": abs(full["losses"][0] - adapted["losses"][0]),
    }
    print(
        f"LoRA step {ratios['speedup']:.2f}x faster, peak memory {ratios['peak_memory_ratio']:.2f}x"
        f", step-0 losses differ by {ratios['step0_loss_diff']:.1e}"
    )
    print(
        json.dumps(
            {"model": args.model, "rank": args.rank, "full": full, "lora": adapted, **ratios}
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
