"""`python -m lit_sft.data.check [--json] [--pairs FILE] data=... data.path=...`: duplicates in a
dataset's splits, with the data config composed as train.py composes it."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.errors import CompactHydraException, InstantiationException
from hydra.utils import instantiate

from lit_sft.cli.errors import hydra_message
from lit_sft.data.check import (
    NEAR_THRESHOLD,
    DataCheck,
    check_splits,
    format_check,
    write_pairs,
)
from lit_sft.data.entries import Entry, split_entries
from lit_sft.errors import debugging, one_line, user_error_in

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
DEFAULT_PAIRS = "data_check_pairs.json"


def parse_args(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    """The command's own options, and the Hydra overrides (`key=value`) after them."""
    parser = argparse.ArgumentParser(
        prog="python -m lit_sft.data.check",
        description="Exact and near-duplicate entries within the train split and between train "
        "and validation / test. Hydra overrides (data=..., data.path=...) pick the data as "
        "train.py does.",
    )
    parser.add_argument("--json", action="store_true", help="print the counts as one JSON object")
    parser.add_argument(
        "--pairs", default=DEFAULT_PAIRS, help=f"the file for the pairs found ({DEFAULT_PAIRS})"
    )
    parser.add_argument(
        "--threshold",
        type=float,
        default=NEAR_THRESHOLD,
        help=f"the TF-IDF cosine from which entries are near duplicates ({NEAR_THRESHOLD})",
    )
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of conf/config.yaml")
    return parser.parse_args(argv), []


def composed_splits(overrides: Sequence[str]) -> dict[str, list[Entry]]:
    """The train / val / test entries of the data config `overrides` compose (before training)."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=list(overrides))
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    train, test, val = split_entries(datamodule.entries(), *datamodule.fractions)
    return {"train": train, "val": val, "test": test}


def check_report(check: DataCheck, pairs: Path) -> dict[str, Any]:
    """What `--json` prints: the counts per between, the split sizes, the pairs file, the time."""
    return {
        **check.counts(),
        "sizes": check.sizes,
        "pairs_file": str(pairs),
        "seconds": check.seconds,
    }


def run(argv: Sequence[str]) -> DataCheck:
    """Checks the composed data, writes the pairs, prints the table or the JSON object."""
    args, _ = parse_args(argv)
    splits = composed_splits(args.overrides)
    check = check_splits(splits, args.threshold)
    pairs = Path(args.pairs)
    write_pairs(pairs, check, splits)
    if args.json:
        print(json.dumps(check_report(check, pairs)))
    else:
        print(format_check(check))
        print(f"pairs: {pairs} ({len(check.pairs)})")
    return check


def main(argv: Sequence[str] | None = None) -> None:
    """The command line; a user or config mistake ends in one `error:` line."""
    argv = sys.argv[1:] if argv is None else argv
    if debugging():
        run(argv)
        return
    try:
        run(argv)
    except Exception as error:
        if user_error := user_error_in(error):
            sys.exit(f"error: {one_line(user_error)}")
        if isinstance(error, CompactHydraException) and not isinstance(
            error, InstantiationException
        ):
            sys.exit(f"error: {hydra_message(error)}")
        raise
