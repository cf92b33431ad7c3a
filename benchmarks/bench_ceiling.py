"""How close this CPU's matrix products let a training step and a decode step come to the peak.

    python -m benchmarks.bench_ceiling [--model gpt2-medium] [--length 65] [--threads 2]

MFU and the roofline divide by ideals; this measures what the step's own products reach, each
alone and warm. Training (batch x `--length` random tokens, every position a target): every GEMM
of a forward and backward pass in autograd's layouts plus the fused AdamW step (the "GEMM
ceiling" side), against lit_sft's and the book's measured steps on the same batch. Decoding
(`--decode-model`, `--decode-batch` rows): every product of a step in the fastest of four layouts
(`x @ W.T`, `W @ x.T`, a transposed copy, oneDNN's prepacked weight), against lit_sft's measured
decode step and the bandwidth roofline.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks import answers as a
from benchmarks import bench_train, common
from benchmarks.bench_recipe import flops_per_target
from benchmarks.common import median_seconds
from benchmarks.steps import Spec, lit_module
from lit_sft.allocator import keep_freed_memory
from lit_sft.generation import generate
from lit_sft.model import GPTConfig
from lit_sft.prepack import PrepackedForward, can_prepack


def parse_args(argv: Sequence[str] | None) -> Any:
    p = common.parser(__doc__, model="gpt2-medium")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--length", type=int, default=65, help="positions a row (the recipe's mean)")
    p.add_argument("--steps", type=int, default=3, help="measured steps, the first a warm-up")
    p.add_argument("--decode-model", default="gpt2-small", type=common.model_name)
    p.add_argument("--decode-batch", type=int, default=8)
    p.add_argument("--peak-size", type=int, default=None, help="peak from one N^3 product only")
    p.add_argument("--same-process", action="store_true", help="no spawn (a quick check)")
    return p.parse_args(argv)


def linear_gemms(rows: int, fan_in: int, fan_out: int) -> float:
    """A linear layer's three training GEMMs: y = x W^T, dx = dy W, dW = dy^T x."""
    x, dy, weight = (
        torch.randn(rows, fan_in),
        torch.randn(rows, fan_out),
        torch.randn(fan_out, fan_in),
    )
    products = (lambda: F.linear(x, weight), lambda: dy @ weight, lambda: dy.t() @ x)
    return sum(median_seconds(product) for product in products)


def training_gemms(config: GPTConfig, batch: int, length: int) -> dict[str, float]:
    """Seconds of one step's GEMMs by part, each product timed alone."""
    rows, d = batch * length, config.emb_dim
    q, k, v = (torch.randn(batch * config.n_heads, length, config.head_dim) for _ in range(3))
    scores = torch.randn(batch * config.n_heads, length, length)
    # Backward: dS = dY V^T has the scores' shape; dV, dQ and dK the values'.
    attention = 2 * median_seconds(lambda: q @ k.transpose(1, 2)) + 4 * median_seconds(
        lambda: scores @ v
    )
    shapes = [(d, 3 * d), (d, d), (d, 4 * d), (4 * d, d)]
    return {
        "blocks": config.n_layers * sum(linear_gemms(rows, i, o) for i, o in shapes),
        "attention": config.n_layers * attention,
        "head": linear_gemms(rows, d, config.vocab_size),
    }


def adamw_seconds(spec: Spec) -> float:
    """One step of lit_sft's own (fused) AdamW over all the parameters."""
    module = lit_module(spec)
    optimizer = module.configure_optimizers()["optimizer"]
    for parameter in module.parameters():
        parameter.grad = torch.randn_like(parameter)
    return median_seconds(optimizer.step, repeats=3)


def best_layout(rows: int, linear: nn.Linear) -> float:
    """Seconds of `linear`'s product for `rows` rows in the fastest of four layouts."""
    weight = linear.weight
    x, transposed = torch.randn(rows, weight.shape[1]), weight.t().contiguous()
    layouts = [lambda: F.linear(x, weight), lambda: weight @ x.t(), lambda: x @ transposed]
    if can_prepack(weight):
        layouts.append(partial(PrepackedForward(linear, rows), x))
    return min(median_seconds(layout) for layout in layouts)


def decode_ceiling(args: Any, book: common.Book | None, tmp: str) -> dict[str, Any]:
    """A decode step's products in their best layouts against lit_sft's measured decode step."""
    config = common.model_config(args.decode_model)
    model = a.lit_model(
        config, common.seeded_weights(Path(tmp) / "decode.safetensors", config, book)
    )
    rows = args.decode_batch
    with torch.inference_mode():
        block = model.blocks[0]
        linears = (block.attn.qkv, block.attn.proj, block.mlp.fc, block.mlp.proj)
        per_layer = sum(best_layout(rows, linear) for linear in linears)
        gemms = model.config.n_layers * per_layer + best_layout(rows, model.out_head)
    prompts, new = a.prompt_tokens(args.data, rows), 33
    full, first = (
        median_seconds(
            lambda n=n: generate(model, prompts, max_new_tokens=n, eos_id=common.NEVER), 3
        )
        for n in (new, 1)
    )
    measured = (full - first) / (new - 1)
    roofline = a.decode_bytes(model) / a.copy_bandwidth()
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
    book = common.setup(args)
    keep_freed_memory()  # a product's big output then reuses memory, as in train.py
    with tempfile.TemporaryDirectory() as tmp:
        spec = bench_train.seeded_spec(args, book, tmp, random_length=args.length)
        train_args = bench_train.parse_args(["--same-process"] if args.same_process else [])
        runs = bench_train.run_sides(spec, train_args)
        sides = {name: bench_train.summarize(rounds, 1) for name, rounds in runs.items()}
        common.reset_peak()
        gemms = training_gemms(GPTConfig(**spec.config), args.batch_size, args.length)
        ceiling = sum(gemms.values()) + adamw_seconds(spec)
        positions = args.batch_size * args.length
        sides["GEMM ceiling"] = common.side(ceiling, positions / ceiling, common.peak_mib())
        peak = common.gemm_peak(book, [(args.peak_size,) * 3] if args.peak_size else None)
        decoding = decode_ceiling(args, book, tmp)
    flops = flops_per_target(spec.config, args.length) * positions
    mfu = {name: flops / s["seconds"] / peak for name, s in sides.items()}
    common.print_sides(
        f"training {args.model}, batch {args.batch_size} x {args.length} random tokens; fp32 "
        f"peak {peak / 1e9:.0f} GFLOP/s; seconds a step",
        sides,
    )
    print("MFU: " + ", ".join(f"{name} {value:.2f}" for name, value in mfu.items()))
    print(f"decoding {args.decode_model}, batch {args.decode_batch}: roofline "
          f"{1e3 * decoding['roofline_step_s']:.1f} ms, GEMMs in their best layouts "
          f"{1e3 * decoding['gemm_s']:.1f} ms = {decoding['ceiling_fraction']:.2f} of it; "
          f"lit_sft's step {1e3 * decoding['measured_step_s']:.1f} ms = "
          f"{decoding['measured_fraction']:.2f}")  # fmt: skip
    return common.emit(
        "bench_ceiling",
        args,
        book,
        sides,
        length=args.length,
        gemm_s=gemms,
        peak_flops_per_s=peak,
        mfu=mfu,
        decoding={"model": args.decode_model, "batch": args.decode_batch, **decoding},
    )


if __name__ == "__main__":
    main()
