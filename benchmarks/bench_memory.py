"""Peak memory and step time with activation checkpointing or bf16-mixed: `bench_train` on random
token rows with that side.

    python -m benchmarks.bench_memory --model gpt2-large --batch-size 4 --length 512 [--steps 1]
    python -m benchmarks.bench_memory --model gpt2-small --length 64 --precision bf16-mixed

Kept as the old spelling of `python -m benchmarks.bench_train --length L --checkpointing` (or
`--precision P`) `--warmup 0`; each side in its own process, so its peak memory (VmHWM) is its own.
Two steps are needed to see checkpointing's gain: AdamW allocates its moments at the first step.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from benchmarks import bench_train, common


def translate(argv: Sequence[str] | None) -> list[str]:
    """The `bench_train` options these old options mean."""
    p = common.parser(__doc__, model="gpt2-large")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--length", type=int, default=512)
    p.add_argument("--steps", type=int, default=1)
    p.add_argument("--precision", choices=["32-true", "bf16-mixed"], default=None)
    p.add_argument("--keep-freed-memory", action=argparse.BooleanOptionalAction, default=True)
    args, rest = p.parse_known_args(argv)
    variant = ("--precision", args.precision) if args.precision else ("--checkpointing",)
    return [
        *("--model", args.model, "--steps", str(args.steps), "--warmup", "0"),
        *("--batch-size", str(args.batch_size), "--length", str(args.length)),
        *("--book-dir", args.book_dir, *variant),
        "--keep-freed-memory" if args.keep_freed_memory else "--no-keep-freed-memory",
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
