"""Answers that end at different lengths: done answers dropped from the batch against kept.

    python -m benchmarks.bench_done_rows --model gpt2-small --n 32 --max-new-tokens 256

Kept as the old spelling of `python -m benchmarks.bench_generate --eos-id staggered --batch-size N
--n N --rounds 2 --slow-n 1 --slow-new-tokens 8`: random weights never choose end-of-text, so the
token that ends most (not all) of a free run's answers is made the end (`--eos-id` to choose);
lit_sft answers the `--n` prompts in one batch as it does (done answers leave the batch) and with
every row kept to the end; the book's `generate` on one prompt, scaled, is the baseline.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from benchmarks import bench_generate, common


def translate(argv: Sequence[str] | None) -> list[str]:
    """The `bench_generate` options these old options mean."""
    p = common.parser(__doc__)
    p.add_argument("--n", type=int, default=32, help="test-set prompts, one batch")
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--eos-id", default="staggered")
    p.add_argument("--rounds", type=int, default=2)
    args, rest = p.parse_known_args(argv)
    return [
        *("--model", args.model, "--n", str(args.n), "--batch-size", str(args.n)),
        *("--max-new-tokens", str(args.max_new_tokens), "--eos-id", args.eos_id),
        *("--rounds", str(args.rounds), "--data", args.data, "--book-dir", args.book_dir),
        *("--slow-n", "1", "--slow-new-tokens", "8"),
        *(("--threads", str(args.threads)) if args.threads else ()),
        *rest,
    ]


def parse_args(argv: Sequence[str] | None) -> Any:
    """The `bench_generate` options, as the old ones translate."""
    return bench_generate.parse_args(translate(argv))


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Runs `bench_generate` with the translated options."""
    return bench_generate.main(translate(argv))


if __name__ == "__main__":
    main()
