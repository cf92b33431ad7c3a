"""data.dedup and the data check from the config to the DataModule's splits and summary.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra.utils import instantiate

from lit_sft.cli.train import train
from lit_sft.data.check import check_splits, dedup_train
from lit_sft.data.entries import split_entries
from lit_sft.data.synthetic import synthetic_entries
from lit_sft.errors import InvalidInput
from tests.data.test_check import known_copies


def dataset(tmp_path: Path) -> tuple[Path, list[str]]:
    """The known copies as one file the book's split cuts into the same train/test/val."""
    splits = known_copies()
    path = tmp_path / "data.json"
    path.write_text(json.dumps(splits["train"] + splits["test"] + splits["val"]))
    fractions = [f"data.train_fraction={23 / 27}", f"data.test_fraction={2 / 27 + 1e-9}"]
    return path, fractions


@pytest.mark.parametrize(("mode", "kept"), [("none", 23), ("exact", 20), ("near", 18)])
def test_dedup_reaches_the_train_split(tiny_config, tmp_path, mode: str, kept: int) -> None:
    path, fractions = dataset(tmp_path)
    cfg = tiny_config(f"data.path={path}", *fractions, f"data.dedup={mode}", "data.batch_size=2")
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    assert len(datamodule.splits["train"]) == kept
    assert (len(datamodule.splits["val"]), len(datamodule.splits["test"])) == (2, 2)
    summary = datamodule.data_check_summary
    assert summary["train"] == {"exact": 1, "near": 2}
    assert summary["train-test"] == {"exact": 1, "near": 2}
    assert summary["dedup"] == mode
    assert summary["dedup_counts"].get("kept", 23) == kept
    # The pairs name entries of the splits before dedup dropped any.
    assert len(datamodule.data_check_pairs) == 5
    assert datamodule.data_check_pairs[0]["b"]["index"] == 20


def test_evaluating_skips_the_check_unless_dedup_changes_train(tiny_config, tmp_path) -> None:
    path, fractions = dataset(tmp_path)
    for mode, checked in (("none", False), ("exact", True)):
        cfg = tiny_config(f"data.path={path}", *fractions, f"data.dedup={mode}")
        datamodule = instantiate(cfg.data)
        datamodule.setup("test")
        assert (datamodule.data_check is not None) == checked
        assert len(datamodule.splits["train"]) == (20 if checked else 23)


def test_an_unknown_dedup_is_a_user_error(tiny_config) -> None:
    with pytest.raises(Exception, match="data.dedup='fuzzy'") as info:
        instantiate(tiny_config("data.dedup=fuzzy").data)
    assert isinstance(info.value.__cause__ or info.value, InvalidInput)


def test_the_check_and_dedup_counts_are_in_summary_json(tiny_config) -> None:
    summary = train(tiny_config("data.dedup=near"))
    train_split, test, val = split_entries(synthetic_entries(200, seed=123))
    splits = {"train": train_split, "val": val, "test": test}
    check = check_splits(splits)
    _, dropped = dedup_train(splits, "near", check)
    assert summary["data_check"]["dedup_counts"] == dropped
    assert {k: summary["data_check"][k] for k in ("train", "train-val", "train-test")} == (
        check.counts()
    )
    assert summary["steps"] > 0
