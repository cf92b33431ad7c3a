"""Answers that end at different lengths: done answers dropped from the batch against kept.

    python -m benchmarks.bench_done_rows --model gpt2-small --n 32 --max-new-tokens 256

The old spelling of `python -m benchmarks.bench_generate --eos-id staggered --batch-size N --n N
--rounds 2 --slow-n 1 --slow-new-tokens 8`, its other options as `bench_generate`'s: random
weights never choose end-of-text, so the token that ends most (not all) of a free run's answers
is made the end; lit_sft answers the `--n` prompts in one batch as it does (done answers leave
the batch) and with every row kept to the end; the book's `generate` on one prompt is the
baseline.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from benchmarks import bench_generate

DEFAULTS = ["--eos-id", "staggered", "--max-new-tokens", "256", "--rounds", "2", "--slow-n", "1",
            "--slow-new-tokens", "8"]  # fmt: skip


def translate(argv: Sequence[str] | None) -> list[str]:
    """The `bench_generate` options these mean (later options override the defaults before them):
    `--n` prompts (32 by default) in one batch."""
    argv = sys.argv[1:] if argv is None else list(argv)
    n = argparse.ArgumentParser(add_help=False)
    n.add_argument("--n", default="32")
    size = n.parse_known_args(argv)[0].n
    return [*DEFAULTS, "--n", size, "--batch-size", size, *argv]


def parse_args(argv: Sequence[str] | None) -> Any:
    return bench_generate.parse_args(translate(argv))


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Runs `bench_generate` with the translated options."""
    return bench_generate.main(translate(argv))


if __name__ == "__main__":
    main()
