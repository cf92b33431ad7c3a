"""Peak memory and step time with activation checkpointing or bf16-mixed: `bench_train` on random
token rows with that side.

    python -m benchmarks.bench_memory --model gpt2-large --batch-size 4 --length 512 [--steps 2]
    python -m benchmarks.bench_memory --model gpt2-small --length 64 --precision bf16-mixed

The old spelling of `python -m benchmarks.bench_train --length L --checkpointing` (or
`--precision P`) `--warmup 0`, its other options as `bench_train`'s; each side in its own
process, so its peak memory (VmHWM) is its own. Two steps show checkpointing's gain: AdamW
allocates its moments at the first.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from benchmarks import bench_train

DEFAULTS = ["--model", "gpt2-large", "--batch-size", "4", "--length", "512", "--steps", "1"]


def translate(argv: Sequence[str] | None) -> list[str]:
    """The `bench_train` options these mean (later options override the defaults before them)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    variant = [] if "--precision" in argv else ["--checkpointing"]
    return [*DEFAULTS, "--warmup", "0", *variant, *argv]


def parse_args(argv: Sequence[str] | None) -> Any:
    return bench_train.parse_args(translate(argv))


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Runs `bench_train` with the translated options."""
    return bench_train.main(translate(argv))


if __name__ == "__main__":
    main()
