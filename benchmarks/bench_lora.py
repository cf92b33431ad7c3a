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
from collections.abc import Sequence
from typing import Any

from bench_train import (
    SHARED,
    in_child,
    lit_side,
    spec_from_initial_weights,
)

from lit_sft.lora import LoRAConfig

WARMUP = 1  # the first step allocates; it is left out of the medians


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
        full = summary(in_child(lit_side, spec))
        adapted = summary(in_child(lit_side, spec, lora))
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
