"""Cached, batched generation against the book's `generate`, same weights, same answers.

    python -m benchmarks.bench_generate --model gpt2-small --n 8 --max-new-tokens 64 [--threads 2]

Greedy, on the CPU; by default no token ends an answer, so every way does the same work per
answer (`--eos-id staggered`: the token that ends most, not all, of a free run's answers does, and
lit_sft also runs with done rows kept to the end). lit_sft answers all `--n` prompts longest first
in batches (as `evaluate.py` does), with and without prepacked weights; the slow ways (the book's
`generate`, lit_sft uncached) the first `--slow-n` with `--slow-new-tokens`, scaled per processed
position. Seconds are per answer, best of `--rounds`; decode tokens/s (prompts' forward left out)
is set against the roofline: the bytes a decode step reads over a copy bandwidth measured here.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from unittest import mock

from benchmarks import answers as a
from benchmarks import common
from lit_sft import generation


def parse_args(argv: Sequence[str] | None) -> Any:
    p = common.parser(__doc__)
    p.add_argument("--n", type=int, default=8, help="test-set prompts to answer")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=8, help="of the cached generation")
    p.add_argument("--slow-n", type=int, default=2, help="prompts the slow ways answer")
    p.add_argument("--slow-new-tokens", type=int, default=None, help="default --max-new-tokens")
    p.add_argument("--eos-id", default=None, help="a token id, or 'staggered'; default none")
    p.add_argument("--rounds", type=int, default=1, help="each way's best of this many")
    p.add_argument("--ref", action="store_true", help="(the book's side always runs; kept)")
    return p.parse_args(argv)


def ways(args: Any, model: Any, book: Any, prompts: a.Answers, eos: int) -> dict[str, Callable]:
    """Each way of answering, as a function of (prompts, new tokens)."""
    size = args.batch_size
    found: dict[str, Callable] = {
        "lit_sft": lambda p, n: a.cached_batched(model, p, n, size, eos),
        "not prepacked": lambda p, n: a.cached_batched(model, p, n, size, eos, prepack=False),
        "uncached": lambda p, n: a.uncached(model, p, n, eos),
    }
    if book is not None:
        found["book"] = lambda p, n: book(p, n, eos)
    if args.eos_id == "staggered":

        def kept(p: a.Answers, n: int) -> a.Answers:
            with mock.patch.object(generation, "DROP_DONE_SHARE", float("inf")):
                return a.cached_batched(model, p, n, size, eos)

        found["done rows kept"] = kept
    return found


def measure(
    run: Callable, prompts: a.Answers, new: int, rounds: int
) -> tuple[a.Answers, float, float]:
    """A way's answers, its best time of `rounds` and its peak memory."""
    common.reset_peak()
    results = [common.timed(lambda: run(prompts, new)) for _ in range(rounds)]
    return results[0][0], min(s for _, s in results), common.peak_mib()


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Runs every way, prints the table and the JSON line."""
    args = parse_args(argv)
    book_code = common.setup(args)
    config = common.model_config(args.model)
    with tempfile.TemporaryDirectory() as tmp:
        weights = common.seeded_weights(Path(tmp) / "init.safetensors", config, book_code)
        model = a.lit_model(config, weights)
        book = a.book_answers(book_code, config, weights) if book_code else None
    prompts = a.prompt_tokens(args.data, args.n)
    slow, new = prompts[: args.slow_n], args.max_new_tokens
    slow_new = args.slow_new_tokens or new
    eos = common.NEVER if args.eos_id is None else args.eos_id
    if eos == "staggered":
        eos = a.staggered_end(a.cached_batched(model, prompts, new, args.batch_size))
    eos = int(eos)
    generation.generate(model, prompts[:1], max_new_tokens=2, eos_id=eos)  # warm-up
    bandwidth = a.copy_bandwidth()
    stretch = a.positions_processed(slow, new) / a.positions_processed(slow, slow_new)
    sides, identical, ours = {}, {}, []
    for name, run in ways(args, model, book, prompts, eos).items():
        fast = name in ("lit_sft", "not prepacked", "done rows kept")
        answers, seconds, peak = measure(
            run, prompts if fast else slow, new if fast else slow_new, args.rounds
        )
        ours = answers if name == "lit_sft" else ours
        seconds *= 1.0 if fast else stretch
        tokens = sum(map(len, answers)) * (1 if fast else new / slow_new)
        sides[name] = common.side(
            seconds / len(answers), tokens / seconds, peak, answers=len(answers)
        )
        identical[name] = a.same_answers(ours, answers)
    prompt_s = {
        name: measure(ways(args, model, None, prompts, eos)[name], prompts, 1, args.rounds)[1]
        for name in ("lit_sft", "not prepacked")
    }
    decode = {
        name: (sum(map(len, ours)) - len(prompts))
        / (sides[name]["seconds"] * len(prompts) - prompt_s[name])
        for name in prompt_s
    }
    batch = min(args.batch_size, len(prompts))
    roofline = batch * bandwidth / a.decode_bytes(model)
    common.print_sides(
        f"{args.model}, {len(prompts)} prompts, {new} new tokens (end-of-text {eos}), batch "
        f"{args.batch_size}; slow ways on {len(slow)} prompts x {slow_new} tokens, scaled; "
        "seconds an answer",
        sides,
    )
    print(f"identical to lit_sft's answers: {identical}")
    print(f"decode {decode['lit_sft']:.1f} tokens/s = {decode['lit_sft'] / roofline:.2f} of the "
          f"roofline ({roofline:.1f}: batch {batch} x {bandwidth / 1e9:.1f} GB/s copy / "
          f"{a.decode_bytes(model) / 1e6:.0f} MB a step); not prepacked "
          f"{decode['not prepacked'] / roofline:.2f}")  # fmt: skip
    if "done rows kept" in sides:
        kept = sides["done rows kept"]["seconds"] / sides["lit_sft"]["seconds"]
        print(f"dropping done rows: {kept:.2f}x; answer lengths {sorted(map(len, ours))}")
    return common.emit(
        "bench_generate",
        args,
        book_code,
        sides,
        n=len(prompts),
        max_new_tokens=new,
        slow_new_tokens=slow_new,
        eos_id=eos,
        identical_answers=identical,
        answer_lengths=sorted(map(len, ours)),
        decode_tokens_per_s=decode,
        copy_bandwidth_bytes_per_s=bandwidth,
        roofline_tokens_per_s=roofline,
    )


if __name__ == "__main__":
    main()
