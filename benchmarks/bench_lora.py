"""LoRA against full finetuning (and the book): `bench_train` with a LoRA side.

    python -m benchmarks.bench_lora --model gpt2-small --steps 6 --rank 16

Kept as the old spelling of `python -m benchmarks.bench_train --lora-rank R --lora-alpha A
--warmup 1`: step 0 is the same model on every side, so its losses must agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from benchmarks import bench_train, common


def translate(argv: Sequence[str] | None) -> list[str]:
    """The `bench_train` options these old options mean."""
    p = common.parser(__doc__)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--alpha", type=float, default=32)
    args, rest = p.parse_known_args(argv)
    return [
        *("--model", args.model, "--steps", str(args.steps), "--warmup", "1"),
        *("--batch-size", str(args.batch_size), "--data", args.data),
        *("--book-dir", args.book_dir, "--lora-rank", str(args.rank)),
        *("--lora-alpha", str(args.alpha)),
        *(("--threads", str(args.threads)) if args.threads else ()),
        *rest,
    ]


def parse_args(argv: Sequence[str] | None) -> Any:
    """The `bench_train` options, as the old ones translate."""
    return bench_train.parse_args(translate(argv))


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Runs `bench_train` with the translated options."""
    return bench_train.main(translate(argv))


if __name__ == "__main__":
    main()
