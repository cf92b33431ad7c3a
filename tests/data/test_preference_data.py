from __future__ import annotations

import json
from pathlib import Path

import pytest

from lit_sft.data.encoding import EncodedEntry
from lit_sft.data.entries import load_entries
from lit_sft.data.preference import (
    PREFERENCE_FIELDS,
    EncodedPair,
    PreferenceDataModule,
    collate_preferences,
    encode_pair,
)
from lit_sft.data.synthetic import synthetic_entries
from lit_sft.prompts import PROMPT_STYLES, prompt_style
from lit_sft.tokenizer import END_OF_TEXT, IGNORE_INDEX, Tokenizer
from tests.helpers.config import SHARED

PREFERENCE_DATA = SHARED / "data" / "instruction-data-with-preference.json"
PAIRS = [
    {
        "instruction": "Convert to passive voice.",
        "input": "The cat ate the fish.",
        "chosen": "The fish was eaten by the cat.",
        "rejected": "Fish.",
        "output": "ignored",
    },
    {"instruction": "Name a primary color.", "chosen": "Red.", "rejected": "I won't.", "id": 7},
]


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return Tokenizer()


def test_collate_matches_the_docstring_example() -> None:
    pair = EncodedPair(7, EncodedEntry([1, 2, 3], 2), EncodedEntry([1, 2, 4, 5], 2))
    out = collate_preferences([pair], pad_id=0)
    assert out["input_ids"].tolist() == [[1, 2, 3, 0], [1, 2, 4, 5]]
    assert out["targets"].tolist() == [[-100, 3, 0, -100], [-100, 4, 5, 0]]
    assert out["pair_index"].tolist() == [7, 7]


@pytest.mark.parametrize("style_name", sorted(PROMPT_STYLES))
def test_only_each_answer_and_its_end_of_text_are_targets(style_name, tokenizer) -> None:
    style = prompt_style(style_name)
    entries = [{"input": "", **e} for e in PAIRS]
    pairs = [encode_pair(i, e, style, tokenizer) for i, e in enumerate(entries)]
    out = collate_preferences(pairs)
    assert out["input_ids"].shape[0] == 4
    for row in range(4):
        entry, answer = entries[row // 2], ("chosen", "rejected")[row % 2]
        targets, inputs = out["targets"][row], out["input_ids"][row]
        kept = (targets != IGNORE_INDEX).nonzero()[:, 0]
        # One contiguous run: the answer then one end-of-text; everything before it is the prompt.
        assert kept.tolist() == list(range(int(kept[0]), int(kept[-1]) + 1))
        assert tokenizer.decode(targets[kept].tolist()) == entry[answer] + "<|endoftext|>"
        assert tokenizer.decode(inputs[: int(kept[0]) + 1].tolist()) == style.prompt(entry)
        padding = targets[int(kept[-1]) + 1 :]
        assert (padding == IGNORE_INDEX).all()
        assert (inputs[int(kept[-1]) + 1 :] == END_OF_TEXT).all()
    assert out["pair_index"].tolist() == [0, 0, 1, 1]


def test_preference_files_are_validated_like_instruction_files(tmp_path: Path) -> None:
    path = tmp_path / "pairs.json"
    path.write_text(json.dumps([{**PAIRS[0]}, {"instruction": "a", "chosen": "b"}]))
    with pytest.raises(ValueError, match=f"entry 1 has no 'rejected' field, in {path}"):
        load_entries(str(path), fields=PREFERENCE_FIELDS)


def test_book_preference_set_splits_like_the_book(tmp_path: Path) -> None:
    if not PREFERENCE_DATA.is_file():
        pytest.skip(f"{PREFERENCE_DATA} is not there")
    data = PreferenceDataModule(path=str(PREFERENCE_DATA), batch_size=8, prompt_style="alpaca")
    data.setup()
    assert {k: len(v) for k, v in data.encoded.items()} == {"train": 935, "val": 55, "test": 110}
    book = json.loads(PREFERENCE_DATA.read_text())
    assert data.splits["test"][0]["output"] == book[935]["output"]  # extra fields kept, unused
    batch = next(iter(data.train_dataloader()))
    assert batch["input_ids"].shape[0] == 16
    assert data.sample_prompt().reference == book[1045]["chosen"]


def test_synthetic_pairs_prefer_the_exact_answer() -> None:
    entries = synthetic_entries(300, seed=1)
    assert all(e["chosen"] == e["output"] != e["rejected"] for e in entries)
    adds = [e for e in entries if e["instruction"].startswith("Add")]
    for e in adds:
        a, b = (int(x) for x in (e["input"] or e["instruction"].split(": ")[1]).split(" + "))
        assert int(e["output"]) == a + b and abs(int(e["rejected"]) - (a + b)) == 1
    data = PreferenceDataModule(path=None, synthetic_size=300, seed=1)
    data.setup()
    sft_test = [e["output"] for e in synthetic_entries(300, seed=1)[255:285]]
    assert [e["output"] for e in data.splits["test"]] == sft_test
