"""LoRA against full finetuning (and the book): `bench_train` with a LoRA side.

    python -m benchmarks.bench_lora --model gpt2-small --steps 6 --rank 16

Kept as the old spelling of `python -m benchmarks.bench_train --lora-rank R --lora-alpha A
--warmup 1`: step 0 is the same model on every side, so its losses must agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from benchmarks import bench_train, common


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Translates the old options and runs `bench_train`."""
    p = common.parser(__doc__)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--alpha", type=float, default=32)
    args, rest = p.parse_known_args(argv)
    return bench_train.main(
        [
            *("--model", args.model, "--steps", str(args.steps), "--warmup", "1"),
            *("--batch-size", str(args.batch_size), "--data", args.data),
            *("--book-dir", args.book_dir, "--lora-rank", str(args.rank)),
            *("--lora-alpha", str(args.alpha)),
            *(("--threads", str(args.threads)) if args.threads else ()),
            *rest,
        ]
    )


if __name__ == "__main__":
    main()
