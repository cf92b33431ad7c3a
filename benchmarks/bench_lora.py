"""LoRA against full finetuning (and the book): `bench_train` with a LoRA side.

    python -m benchmarks.bench_lora --model gpt2-small --steps 6 --rank 16

The old spelling of `python -m benchmarks.bench_train --lora-rank R --lora-alpha A --warmup 1`
(its other options as `bench_train`'s): step 0 is the same model on every side, so its losses
must agree.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from benchmarks import bench_train

DEFAULTS = ["--warmup", "1", "--lora-rank", "16"]
RENAMED = {"--rank": "--lora-rank", "--alpha": "--lora-alpha"}


def translate(argv: Sequence[str] | None) -> list[str]:
    """The `bench_train` options these mean (later options override the defaults before them)."""
    argv = sys.argv[1:] if argv is None else argv
    return DEFAULTS + [RENAMED.get(word, word) for word in argv]


def parse_args(argv: Sequence[str] | None) -> Any:
    return bench_train.parse_args(translate(argv))


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Runs `bench_train` with the translated options."""
    return bench_train.main(translate(argv))


if __name__ == "__main__":
    main()
