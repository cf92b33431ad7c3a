"""Field mapping (other people's field names) and entries that name their own split."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra.utils import instantiate

from lit_sft.data.entries import load_entries, split_entries
from lit_sft.data.preference import PREFERENCE_FIELDS
from lit_sft.errors import InvalidInput
from tests.helpers.config import compose_config

# The DPO article's pairs (Intel/orca_dpo_pairs): system, question, chosen, rejected.
ARTICLE_PAIRS = [
    {"system": "You are helpful.", "question": "Name a colour.", "chosen": "Red.", "rejected": "7"},
    {"system": "", "question": "2 + 2?", "chosen": "4", "rejected": "5"},
]


def write(tmp_path: Path, entries: list) -> str:
    path = tmp_path / "pairs.json"
    path.write_text(json.dumps(entries), encoding="utf-8")
    return str(path)


def test_mapped_fields_load_other_peoples_pairs_as_they_are(tmp_path: Path) -> None:
    path = write(tmp_path, ARTICLE_PAIRS)
    entries = load_entries(path, fields=PREFERENCE_FIELDS, field_map={"instruction": "question"})
    assert [e["instruction"] for e in entries] == ["Name a colour.", "2 + 2?"]
    assert [(e["chosen"], e["rejected"], e["input"]) for e in entries] == [
        ("Red.", "7", ""),
        ("4", "5", ""),
    ]
    mapped = load_entries(
        path, fields=PREFERENCE_FIELDS, field_map={"instruction": "question", "input": "system"}
    )
    assert mapped[0]["input"] == "You are helpful."


def test_without_the_mapping_the_missing_field_says_how_to_map_it(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match=r"data.fields.instruction=<its name>"):
        load_entries(write(tmp_path, ARTICLE_PAIRS), fields=PREFERENCE_FIELDS)


def test_a_missing_mapped_field_is_one_line_naming_the_mapping(tmp_path: Path) -> None:
    pairs = [ARTICLE_PAIRS[0], {k: v for k, v in ARTICLE_PAIRS[1].items() if k != "question"}]
    path = write(tmp_path, pairs)
    with pytest.raises(InvalidInput) as error:
        load_entries(path, fields=PREFERENCE_FIELDS, field_map={"instruction": "question"})
    assert str(error.value) == (
        f"entry 1 has no 'question' field (data.fields.instruction=question), in {path}; name a "
        "field the file has (its fields: system, chosen, rejected)"
    )


def test_entries_that_name_their_split_keep_it() -> None:
    entries = [{"instruction": str(i), "split": s} for i, s in enumerate("tvtsvt")]
    names = {"t": "train", "v": "val", "s": "test"}
    entries = [{**e, "split": names[e["split"]]} for e in entries]
    train, test, val = split_entries(entries, train_fraction=0.1, test_fraction=0.1)
    assert [e["instruction"] for e in train] == ["0", "2", "5"]
    assert [e["instruction"] for e in test] == ["3"]
    assert [e["instruction"] for e in val] == ["1", "4"]


def test_split_tags_on_some_entries_only_or_unknown_are_refused() -> None:
    with pytest.raises(InvalidInput, match="entry 1 has no 'split' field but others have"):
        split_entries([{"split": "train"}, {}])
    with pytest.raises(InvalidInput, match="entry 0 has split='dev'; expected one of train"):
        split_entries([{"split": "dev"}])


@pytest.mark.parametrize("data", ["preference", "instruction"])
def test_data_fields_reach_the_datamodule(tmp_path: Path, data: str) -> None:
    rows = [
        {"system": "Be brief.", "question": f"Q{i}?", "chosen": f"A{i}", "rejected": "no"}
        for i in range(20)
    ]
    overrides = [
        f"data={data}",
        f"data.path={write(tmp_path, rows)}",
        "data.fields.instruction=question",
        *(["data.fields.output=chosen"] if data == "instruction" else []),
    ]
    cfg = compose_config(["model=gpt2-tiny", "prompt=chatml", *overrides], tmp_path / "run")
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    train = datamodule.splits["train"]
    assert [e["instruction"] for e in train[:2]] == ["Q0?", "Q1?"]
    assert train[0]["output"] == "A0" and train[0]["system"] == "Be brief."
    # chatml renders the system field: the mapping changed what the model is shown.
    assert "Be brief." in datamodule.style.prompt(train[0])
    assert datamodule.style.prompt(train[0]).count("Q0?") == 1
