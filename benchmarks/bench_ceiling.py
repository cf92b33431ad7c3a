"""How close this CPU's matrix products let a training step and a decode step come to the peak.

    python -m benchmarks.bench_ceiling [--model gpt2-medium] [--length 65] [--threads 2]

MFU and the bandwidth roofline divide by ideals: `../shared/bench/peak_flops.py`'s best fp32
GEMM rate, and the weights' bytes over a copy bandwidth. This script measures, in one invocation,
what the step's own products reach on this machine, each alone and warm: the MFU (and roofline
fraction) of a step that were nothing but those products.

- Training (`--model`, batch `--batch-size` x `--length`, every position a target, as grouped
  batches nearly are): every GEMM of a forward and backward pass (each linear's forward, input
  gradient and weight gradient, in the layouts autograd uses; the output head on every row; the
  attention products as batched matmuls) plus the fused AdamW step, against lit_sft's whole
  measured step (`sft_step`, the module's own AdamW) on the same shape. Ceiling MFU = the model
  FLOPs (6 x matmul parameters + attention per target, as `bench_recipe`) over the GEMM and AdamW
  time, over the peak.
- Decoding (`--decode-model`, `--decode-batch` rows, one new token each): every product of a
  decode step timed in the fastest of four layouts (`x @ W.T` as `nn.Linear`, `W @ x.T`, `x`
  times a transposed copy of `W`, and oneDNN's prepacked weight as lit_sft decodes); ceiling = the
  roofline's step time over that sum, against lit_sft's measured decode step.

The process keeps freed memory as `train.py` does (`keep_freed_memory`), for the products'
outputs and lit_sft's steps alike. Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks import bench_train as bt
from benchmarks.bench_generate import (
    NEVER,
    build_model,
    copy_bandwidth,
    decode_bytes,
    model_config,
    prompt_tokens,
)
from benchmarks.bench_recipe import flops_per_target, gemm_peak
from lit_sft.allocator import keep_freed_memory
from lit_sft.generation import generate
from lit_sft.model import GPTConfig
from lit_sft.prepack import PrepackedForward, can_prepack
from lit_sft.training.sft import InstructionModule
from lit_sft.training.steps import sft_step


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gpt2-medium", help="a size in conf/model")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument(
        "--length", type=int, default=65, help="positions per row (the recipe's grouped mean)"
    )
    parser.add_argument("--steps", type=int, default=3, help="lit_sft steps, the first a warm-up")
    parser.add_argument("--decode-model", default="gpt2-small")
    parser.add_argument("--decode-batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--data", default=str(bt.SHARED / "data" / "instruction-data.json"))
    parser.add_argument("--ref-dir", default=str(bt.SHARED / "bench" / "ref"))
    return parser.parse_args(argv)


def seconds(run: Callable[[], Any], repeats: int = 7) -> float:
    """Median wall time of `run` after two warm-up calls."""
    run()
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def linear_gemms(rows: int, fan_in: int, fan_out: int) -> float:
    """A linear layer's three training GEMMs, as autograd runs them: y = x W^T, dx = dy W,
    dW = dy^T x."""
    x, dy = torch.randn(rows, fan_in), torch.randn(rows, fan_out)
    weight = torch.randn(fan_out, fan_in)
    return (
        seconds(lambda: F.linear(x, weight))
        + seconds(lambda: dy @ weight)
        + seconds(lambda: dy.t() @ x)
    )


def attention_gemms(config: GPTConfig, batch: int, length: int) -> float:
    """One layer's attention products (scores and weighted values), forward and backward."""
    heads, dim = config.n_heads, config.head_dim
    q, k, v = (torch.randn(batch * heads, length, dim) for _ in range(3))
    scores = torch.randn(batch * heads, length, length)
    scores_s = seconds(lambda: q @ k.transpose(1, 2))  # (T, d) x (d, T)
    values_s = seconds(lambda: scores @ v)  # (T, T) x (T, d)
    # Backward: dS = dY V^T has the scores' shape; dV = S^T dY, dQ = dS K and dK = dS^T Q the
    # values'.
    return 2 * scores_s + 4 * values_s


def training_gemms(config: GPTConfig, batch: int, length: int) -> dict[str, float]:
    """Seconds of one step's GEMMs by part, each product timed alone."""
    rows, d = batch * length, config.emb_dim
    block = (
        linear_gemms(rows, d, 3 * d)
        + linear_gemms(rows, d, d)
        + linear_gemms(rows, d, 4 * d)
        + linear_gemms(rows, 4 * d, d)
    )
    return {
        "blocks": config.n_layers * block,
        "attention": config.n_layers * attention_gemms(config, batch, length),
        "head": linear_gemms(rows, d, config.vocab_size),
    }


def adamw_seconds(module: InstructionModule) -> float:
    """One step of the module's own (fused) AdamW over all its parameters."""
    optimizer = module.configure_optimizers()["optimizer"]
    for parameter in module.parameters():
        parameter.grad = torch.randn_like(parameter)
    return seconds(optimizer.step, repeats=3)


def lit_step_seconds(module: InstructionModule, batch: int, length: int, steps: int) -> float:
    """Median time of lit_sft's training step on random tokens, every position a target."""
    optimizer = module.configure_optimizers()["optimizer"]
    ids = torch.randint(0, module.model.config.vocab_size, (batch, length + 1))
    tensors = {"input_ids": ids[:, :-1], "targets": ids[:, 1:]}
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        sft_step(module.model, optimizer, tensors, scale=1 / (batch * length))
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def training_ceiling(args: argparse.Namespace, peak: float) -> dict[str, Any]:
    """The step's GEMM + AdamW time against lit_sft's measured step; both as MFU."""
    config = asdict(model_config(args.model))
    module = InstructionModule(config)
    gemms = training_gemms(module.model.config, args.batch_size, args.length)
    adamw = adamw_seconds(module)
    module.zero_grad(set_to_none=True)
    measured = lit_step_seconds(module, args.batch_size, args.length, args.steps)
    flops = flops_per_target(config, args.length) * args.batch_size * args.length
    ceiling = sum(gemms.values()) + adamw
    return {
        "gemm_s": gemms,
        "adamw_s": adamw,
        "ceiling_step_s": ceiling,
        "measured_step_s": measured,
        "ceiling_mfu": flops / ceiling / peak,
        "measured_mfu": flops / measured / peak,
        "gemm_flops_per_s": flops / sum(gemms.values()),
    }


def best_layout(rows: int, linear: nn.Linear) -> float:
    """Seconds of `linear`'s product for `rows` rows in the fastest of four layouts."""
    weight = linear.weight
    x, transposed = torch.randn(rows, weight.shape[1]), weight.t().contiguous()
    layouts = [
        lambda: F.linear(x, weight),
        lambda: weight @ x.t(),
        lambda: x @ transposed,
    ]
    if can_prepack(weight):
        layouts.append(partial(PrepackedForward(linear, rows), x))
    return min(seconds(layout) for layout in layouts)


def decode_ceiling(args: argparse.Namespace, bandwidth: float) -> dict[str, Any]:
    """A decode step's products in their best layouts against lit_sft's measured decode step."""
    model = build_model(args.decode_model)
    rows = args.decode_batch
    with torch.inference_mode():
        block = model.blocks[0]
        per_layer = sum(
            best_layout(rows, linear)
            for linear in (block.attn.qkv, block.attn.proj, block.mlp.fc, block.mlp.proj)
        )
        gemms = model.config.n_layers * per_layer + best_layout(rows, model.out_head)
    prompts = prompt_tokens(args.data, "alpaca", rows)
    new = 33  # NEVER ends an answer: every decode runs its full length
    full = seconds(lambda: generate(model, prompts, max_new_tokens=new, eos_id=NEVER), 3)
    first = seconds(lambda: generate(model, prompts, max_new_tokens=1, eos_id=NEVER), 3)
    measured = (full - first) / (new - 1)
    roofline = decode_bytes(model) / bandwidth
    return {
        "gemm_s": gemms,
        "measured_step_s": measured,
        "roofline_step_s": roofline,
        "ceiling_fraction": roofline / gemms,
        "measured_fraction": roofline / measured,
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Measures both ceilings, prints the table and the JSON line."""
    args = parse_args(argv)
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(bt.SHARED / "tiktoken-cache"))
    # As train.py runs: a product's big output then reuses memory instead of faulting in pages.
    keep_freed_memory()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    peak = gemm_peak(args.ref_dir)
    bandwidth = copy_bandwidth()
    training = training_ceiling(args, peak)
    decoding = decode_ceiling(args, bandwidth)
    gemm = training["gemm_s"]
    print(
        f"{torch.get_num_threads()} threads; peak_flops.py's fp32 peak {peak / 1e9:.0f} GFLOP/s, "
        f"copy bandwidth {bandwidth / 1e9:.1f} GB/s"
    )
    print(
        f"training {args.model}, batch {args.batch_size} x {args.length}: GEMMs "
        f"{sum(gemm.values()):.3f} s (blocks {gemm['blocks']:.3f}, attention "
        f"{gemm['attention']:.3f}, head {gemm['head']:.3f}; "
        f"{training['gemm_flops_per_s'] / 1e9:.0f} GFLOP/s of model FLOPs), AdamW "
        f"{training['adamw_s']:.3f} s"
    )
    print(
        f"  ceiling step {training['ceiling_step_s']:.3f} s = MFU {training['ceiling_mfu']:.2f}; "
        f"lit_sft's step {training['measured_step_s']:.3f} s = MFU {training['measured_mfu']:.2f}"
        f" ({training['ceiling_step_s'] / training['measured_step_s']:.2f} of the ceiling)"
    )
    print(
        f"decoding {args.decode_model}, batch {args.decode_batch}: roofline "
        f"{1e3 * decoding['roofline_step_s']:.1f} ms, GEMMs in their best layouts "
        f"{1e3 * decoding['gemm_s']:.1f} ms = {decoding['ceiling_fraction']:.2f} of the roofline; "
        f"lit_sft's step {1e3 * decoding['measured_step_s']:.1f} ms = "
        f"{decoding['measured_fraction']:.2f}"
    )
    result = {
        "bench": "bench_ceiling",
        "threads": torch.get_num_threads(),
        "peak_flops_per_s": peak,
        "copy_bandwidth_bytes_per_s": bandwidth,
        "training": {"model": args.model, "batch": args.batch_size, "length": args.length,
                     **training},
        "decoding": {"model": args.decode_model, "batch": args.decode_batch, **decoding},
    }  # fmt: skip
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
