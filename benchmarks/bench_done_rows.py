"""Answers that end at different lengths: done answers dropped from the batch against kept.

    python -m benchmarks.bench_done_rows --model gpt2-small --n 32 --max-new-tokens 256

A trained model's answers end at different lengths, and a batch runs until its longest ends.
Random weights (seed 123) never choose end-of-text, so this benchmark makes one of their tokens
the end: by default, the token of a free run (no end) of the same prompts that ends the most
answers, but not all (`--eos-id` to choose). lit_sft answers the `--n` test prompts in one batch
twice, alternating: as it does (done answers leave the batch at a check once they are
`DROP_DONE_SHARE` of it) and with every row kept to the end. Prints the answers' lengths, both
times and whether the answers are identical, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from collections.abc import Sequence
from unittest import mock

import torch

from benchmarks.bench_generate import BOOK_DATA, NEVER, build_model, prompt_tokens, timed
from lit_sft import generation
from lit_sft.generation import generate


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gpt2-small", help="a size in conf/model")
    parser.add_argument("--n", type=int, default=32, help="test-set prompts, one batch")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--eos-id", type=int, default=None, help="default: chosen from a free run")
    parser.add_argument("--rounds", type=int, default=2, help="alternating timings of each way")
    parser.add_argument("--data", default=str(BOOK_DATA), help="instruction set")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    return parser.parse_args(argv)


def staggered_end(free: list[list[int]]) -> int:
    """The token that, as end-of-text, ends the most of these answers without ending them all."""
    counts = {t: sum(t in a for a in free) for t in {t for a in free for t in a}}
    candidates = [t for t, n in counts.items() if n < len(free)]
    return max(candidates, key=lambda t: (counts[t], -t))


def main(argv: Sequence[str] | None = None) -> dict[str, object]:
    """Times both ways and prints a table and a JSON line."""
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model = build_model(args.model)
    prompts = prompt_tokens(args.data, "alpaca", args.n)
    new = args.max_new_tokens
    eos = args.eos_id
    if eos is None:
        eos = staggered_end(generate(model, prompts, max_new_tokens=new, eos_id=NEVER))

    def answer() -> list[list[int]]:
        return generate(model, prompts, max_new_tokens=new, eos_id=eos)

    def keep_every_row() -> list[list[int]]:
        with mock.patch.object(generation, "DROP_DONE_SHARE", float("inf")):
            return answer()

    times: dict[str, list[float]] = {"dropped": [], "kept": []}
    for _ in range(args.rounds):
        dropped, seconds = timed(answer)
        times["dropped"].append(seconds)
        kept, seconds = timed(keep_every_row)
        times["kept"].append(seconds)
    lengths = sorted(len(a) for a in dropped)
    best = {way: min(seconds) for way, seconds in times.items()}
    print(
        f"{args.model}, {len(prompts)} prompts in one batch, up to {new} new tokens, end-of-text "
        f"{eos}, {torch.get_num_threads()} threads; answer lengths min {lengths[0]}, median "
        f"{statistics.median(lengths)}, max {lengths[-1]}, {sum(lengths)} tokens"
    )
    for way, seconds in best.items():
        print(f"done rows {way:<8} {seconds:7.2f} s  {sum(lengths) / seconds:7.1f} tokens/s")
    print(f"dropping done rows: {best['kept'] / best['dropped']:.2f}x; identical {dropped == kept}")
    result = {
        "bench": "bench_done_rows",
        "model": args.model,
        "n": len(prompts),
        "max_new_tokens": new,
        "eos_id": eos,
        "threads": torch.get_num_threads(),
        "answer_lengths": lengths,
        "seconds": times,
        "speedup": best["kept"] / best["dropped"],
        "identical": dropped == kept,
        "drop_done_share": generation.DROP_DONE_SHARE,
        "loadavg": list(os.getloadavg()),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
