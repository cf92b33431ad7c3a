"""Cached, batched generation against the book's `generate` and uncached generation, same answers.

    python -m benchmarks.bench_generate --model gpt2-small --n 8 --max-new-tokens 64 [--ref]

Random weights (seed 123), greedy, on the CPU; the end-of-text id is one no token has, so every
answer is `--max-new-tokens` long and every way does the same work per answer. lit_sft answers
all `--n` prompts, longest first in batches of `--batch-size` (as evaluation does), and again
without prepacked weights (`prepack_weights=False`: MKL's GEMM for every product); the slow ways
(uncached one prompt at a time, and with `--ref` the book's `generate` from ../shared/bench/ref,
same weights) answer only the first `--slow-n` prompts, and their time per answer is compared.
Decode tokens/s (without the prompt's forward) is set against the bandwidth roofline: the bytes
of the weights one decode step reads, over a copy bandwidth measured in the same invocation.
Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import tiktoken
import torch
import yaml

from lit_sft.checkpoints import export_hf
from lit_sft.data.entries import load_entries, split_entries
from lit_sft.data.synthetic import synthetic_entries
from lit_sft.generation import generate
from lit_sft.model import GPT, GPTConfig
from lit_sft.prompts import prompt_style

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LIT_SFT_SHARED", REPO.parent / "shared"))
BOOK_DATA = SHARED / "data" / "instruction-data.json"
REF_DIR = SHARED / "bench" / "ref"
NEVER = -1  # an end-of-text id no token has

Answers = list[list[int]]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gpt2-small", help="a size in conf/model")
    parser.add_argument("--n", type=int, default=8, help="test-set prompts to answer")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8, help="of the cached generation")
    parser.add_argument(
        "--slow-n", type=int, default=2, help="prompts the slow ways answer (then scaled)"
    )
    parser.add_argument(
        "--slow-new-tokens",
        type=int,
        default=None,
        help="new tokens of the slow ways (default all), their time scaled per position",
    )
    parser.add_argument("--prompt", default="alpaca", help="prompt style")
    parser.add_argument(
        "--data", default=str(BOOK_DATA), help="instruction set (the book's; if absent, synthetic)"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--ref", action="store_true", help="also time the book's generate")
    return parser.parse_args(argv)


def model_config(name: str) -> GPTConfig:
    """The architecture `conf/model/<name>.yaml` describes."""
    base, size = (
        yaml.safe_load((REPO / "conf" / "model" / f"{file}.yaml").read_text())
        for file in ("base/gpt2", name)
    )
    # The base's `arch.tie_weights` interpolates `model.tie_weights`, which a size may override.
    tie_weights = size.get("tie_weights", base["tie_weights"])
    return GPTConfig(**{**base["arch"], **size["arch"], "tie_weights": tie_weights})


def build_model(name: str) -> GPT:
    """The model size `conf/model/<name>.yaml` describes, randomly initialised from seed 123."""
    torch.manual_seed(123)
    return GPT(model_config(name)).eval()


def prompt_tokens(data: str, style_name: str, n: int) -> list[list[int]]:
    """The token ids of the first `n` test-set prompts."""
    entries = load_entries(data) if Path(data).is_file() else synthetic_entries(2000, seed=123)
    test = split_entries(entries)[1][:n]
    style, tokenizer = prompt_style(style_name), tiktoken.get_encoding("gpt2")
    return [tokenizer.encode(style.prompt(entry)) for entry in test]


def timed(run: Callable[[], Answers]) -> tuple[Answers, float]:
    start = time.perf_counter()
    answers = run()
    return answers, time.perf_counter() - start


def cached_batched(
    model: GPT, prompts: list[list[int]], new: int, batch_size: int, prepack: bool = True
) -> Answers:
    """Longest prompt first, in batches, as evaluation answers; the answers in prompt order."""
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]), reverse=True)
    answers: dict[int, list[int]] = {}
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        made = generate(
            model,
            [prompts[i] for i in batch],
            max_new_tokens=new,
            eos_id=NEVER,
            prepack_weights=prepack,
        )
        answers.update(zip(batch, made, strict=True))
    return [answers[i] for i in range(len(prompts))]


def positions_processed(prompts: list[list[int]], new: int) -> int:
    """Positions an uncached generation of `new` tokens runs through: prompt + t for each t."""
    return sum(len(p) * new + new * (new - 1) // 2 for p in prompts)


def copy_bandwidth(megabytes: int = 512, repeats: int = 5) -> float:
    """Bytes moved per second (read + written) copying a large tensor: the best of `repeats`."""
    source = torch.ones(megabytes * 2**20 // 4)
    target = torch.empty_like(source)
    target.copy_(source)
    best = min(timed(lambda: target.copy_(source))[1] for _ in range(repeats))
    return 2 * source.numel() * 4 / best


def decode_bytes(model: GPT) -> int:
    """The bytes of the weights one decode step reads: all but the two embedding tables, which
    it reads a row of per token, and the output head (the token table too, when tied)."""
    skip = {id(model.tok_emb.weight), id(model.pos_emb.weight)}
    head = model.out_head.weight
    read = sum(p.numel() * p.element_size() for p in model.parameters() if id(p) not in skip)
    return read + (head.numel() * head.element_size() if id(head) in skip else 0)


def uncached_single(model: GPT, prompts: list[list[int]], new: int) -> Answers:
    return [
        generate(model, [p], max_new_tokens=new, eos_id=NEVER, use_cache=False)[0] for p in prompts
    ]


def book_generation(model: GPT, prompts: list[list[int]], new: int) -> Callable[[], Answers]:
    """The book's generate, one prompt at a time, on the book's model holding `model`'s weights."""
    # Only importable beside ../shared/bench; loaded here so that the rest runs without it.
    sys.path.insert(0, str(REF_DIR))
    import bench_common
    from previous_chapters import GPTModel
    from previous_chapters import generate as book_gen

    config = model.config
    book = GPTModel(
        {
            "vocab_size": config.vocab_size,
            "context_length": config.context_length,
            "emb_dim": config.emb_dim,
            "n_layers": config.n_layers,
            "n_heads": config.n_heads,
            "drop_rate": config.drop_rate,
            "qkv_bias": config.qkv_bias,
        }
    )
    with tempfile.TemporaryDirectory() as tmp:
        export_hf(model, tmp)
        bench_common.load_hf_safetensors(book, str(Path(tmp) / "model.safetensors"))
    book.eval()

    def run() -> Answers:
        answers = []
        for p in prompts:
            out = book_gen(book, torch.tensor([p]), new, config.context_length, eos_id=NEVER)
            answers.append(out[0, len(p) :].tolist())
        return answers

    return run


def same_tokens(a: Answers, b: Answers) -> tuple[int, list[int]]:
    """How many answers are identical, and where each differing one first differs."""
    first_diffs = []
    for x, y in zip(a, b, strict=True):
        if x != y:
            equal_prefix = [s == t for s, t in zip(x, y, strict=False)] + [False]
            first_diffs.append(equal_prefix.index(False))
    return len(a) - len(first_diffs), first_diffs


def main(argv: Sequence[str] | None = None) -> dict[str, object]:
    """Runs the comparison and prints a table and a JSON line."""
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model = build_model(args.model)
    prompts = prompt_tokens(args.data, args.prompt, args.n)
    slow_prompts = prompts[: args.slow_n]
    new = args.max_new_tokens
    generate(model, prompts[:1], max_new_tokens=2, eos_id=NEVER)  # warm-up, untimed
    bandwidth = copy_bandwidth()
    slow_new = args.slow_new_tokens or new
    ways = {
        "cached, batched": lambda: cached_batched(model, prompts, new, args.batch_size),
        # The prompts' forward alone (one new token), to tell decoding time from it.
        "prompts only": lambda: cached_batched(model, prompts, 1, args.batch_size),
        "cached, batched, not prepacked": lambda: cached_batched(
            model, prompts, new, args.batch_size, prepack=False
        ),
        "prompts only, not prepacked": lambda: cached_batched(
            model, prompts, 1, args.batch_size, prepack=False
        ),
    }
    if slow_prompts:
        ways["uncached, one at a time"] = lambda: uncached_single(model, slow_prompts, slow_new)
    if args.ref and slow_prompts:
        ways["book generate"] = book_generation(model, slow_prompts, slow_new)
    results = {name: timed(run) for name, run in ways.items()}
    # Without a cache every new token runs the whole sequence so far: the time per position
    # processed carries a short run over to the full length.
    stretch = positions_processed(slow_prompts, new) / positions_processed(slow_prompts, slow_new)
    ours, ours_s = results["cached, batched"]
    prompt_s = results["prompts only"][1]
    rows = {}
    for name, (answers, seconds) in results.items():
        if name.startswith("prompts only"):
            continue
        scale = 1.0 if name.startswith("cached, batched") else stretch
        seconds *= scale
        identical, first_diffs = same_tokens(
            answers, [a[: len(answers[0])] for a in ours[: len(answers)]]
        )
        tokens = len(answers) * new if scale != 1.0 else sum(len(a) for a in answers)
        rows[name] = {
            "tokens_per_s": tokens / seconds,
            "s_per_answer": seconds / len(answers),
            "seconds": seconds,
            "extrapolated_from_new_tokens": slow_new if scale != 1.0 else None,
            "answers": len(answers),
            "tokens": tokens,
            "identical_to_cached": identical,
            "first_differences": first_diffs,
        }
    ours_row = rows["cached, batched"]
    for row in rows.values():
        row["speedup_per_answer"] = row["s_per_answer"] / ours_row["s_per_answer"]
    batch = min(args.batch_size, len(prompts))
    decode_tokens_per_s = (ours_row["tokens"] - len(prompts)) / (ours_s - prompt_s)
    plain_s = results["cached, batched, not prepacked"][1]
    plain_prompt_s = results["prompts only, not prepacked"][1]
    plain_decode_tokens_per_s = (ours_row["tokens"] - len(prompts)) / (plain_s - plain_prompt_s)
    roofline_tokens_per_s = batch * bandwidth / decode_bytes(model)
    print(
        f"{args.model}, {len(prompts)} prompts (median {statistics.median(map(len, prompts))} "
        f"tokens), {new} new tokens each, batch {args.batch_size}, "
        f"{torch.get_num_threads()} threads; slow ways on {len(slow_prompts)} prompts"
        f"{f' x {slow_new} new tokens' if slow_new != new else ''}, scaled"
    )
    print(f"{'':<26}{'tokens/s':>10}{'s/answer':>10}{'lit_sft is':>12}{'identical':>11}")
    for name, row in rows.items():
        print(
            f"{name:<26}{row['tokens_per_s']:>10.1f}{row['s_per_answer']:>10.2f}"
            f"{row['speedup_per_answer']:>11.1f}x{row['identical_to_cached']:>8}/{row['answers']}"
        )
    print(
        f"decode {decode_tokens_per_s:.1f} tokens/s; roofline {roofline_tokens_per_s:.1f} "
        f"(batch {batch} x {bandwidth / 1e9:.1f} GB/s copy / {decode_bytes(model) / 1e6:.0f} MB "
        f"of weights per step): {decode_tokens_per_s / roofline_tokens_per_s:.2f} of it; "
        f"not prepacked {plain_decode_tokens_per_s:.1f} tokens/s = "
        f"{plain_decode_tokens_per_s / roofline_tokens_per_s:.2f}"
    )
    result = {
        "bench": "bench_generate",
        "model": args.model,
        "n": len(prompts),
        "slow_n": len(slow_prompts),
        "slow_new_tokens": slow_new,
        "max_new_tokens": new,
        "batch_size": args.batch_size,
        "threads": torch.get_num_threads(),
        "prompt_seconds": prompt_s,
        "decode_tokens_per_s": decode_tokens_per_s,
        "decode_tokens_per_s_not_prepacked": plain_decode_tokens_per_s,
        "copy_bandwidth_bytes_per_s": bandwidth,
        "decode_weight_bytes": decode_bytes(model),
        "roofline_tokens_per_s": roofline_tokens_per_s,
        "roofline_fraction": decode_tokens_per_s / roofline_tokens_per_s,
        "loadavg": list(os.getloadavg()),
        "results": rows,
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
