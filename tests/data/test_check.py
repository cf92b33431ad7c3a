"""Duplicate checks on sets built with known copies; the fast search against brute force."""

from __future__ import annotations

import json
import random
import time

import numpy as np
import pytest
from sklearn.metrics.pairwise import cosine_similarity

from lit_sft.cli.check import main
from lit_sft.data.check import (
    DataCheck,
    check_splits,
    data_check_line,
    dedup_train,
    entry_fields,
    near_pairs,
    pair_records,
    tfidf_rows,
)
from lit_sft.errors import InvalidInput

WORDS = [f"w{i}" for i in range(400)]


def sentence(rng: random.Random, n: int = 30) -> str:
    return " ".join(rng.choices(WORDS, k=n))


def changed(rng: random.Random, text: str, k: int) -> str:
    """`text` with `k` of its words replaced."""
    words = text.split()
    for index in rng.sample(range(len(words)), k):
        words[index] = "zz" + words[index]
    return " ".join(words)


def entry(instruction: str, output: str, input_text: str = "") -> dict[str, str]:
    return {"instruction": instruction, "input": input_text, "output": output}


def known_copies() -> dict[str, list[dict[str, str]]]:
    """A set whose copies are known: which entries are exact or near copies of which."""
    rng = random.Random(0)
    train = [entry(f"Question {i}: {sentence(rng, 5)}", sentence(rng)) for i in range(20)]
    original = train[3]
    train.append({**original, "instruction": original["instruction"].upper() + "!"})  # 20: exact
    train.append({**train[7], "output": changed(rng, train[7]["output"], 1)})  # 21: near 7
    train.append({**train[8], "output": changed(rng, train[8]["output"], 20)})  # 22: other
    val = [entry("Fresh question", sentence(rng)), dict(train[11])]  # val 1: exact copy
    test = [{**train[12], "output": changed(rng, train[12]["output"], 1)}, dict(train[13])]
    return {"train": train, "val": val, "test": test}


def test_known_copies_are_found() -> None:
    splits = known_copies()
    check = check_splits(splits)
    assert check.counts() == {
        "train": {"exact": 1, "near": 2},
        "train-val": {"exact": 1, "near": 1},
        "train-test": {"exact": 1, "near": 2},
    }
    found = {(p.between, p.kind, p.train, p.other) for p in check.pairs}
    assert found == {
        ("train", "exact", 3, 20),
        ("train", "near", 7, 21),
        ("train-val", "exact", 11, 1),
        ("train-test", "near", 12, 0),
        ("train-test", "exact", 13, 1),
    }
    near = next(p for p in check.pairs if p.kind == "near" and p.between == "train")
    assert 0.9 <= near.similarity < 1
    records = pair_records(check, splits)
    assert records[0]["a"]["entry"] == splits["train"][3]
    assert records[0]["b"] == {"split": "train", "index": 20, "entry": splits["train"][20]}
    line = data_check_line(check)
    assert "train 1 exact / 2 near" in line and "train-test 1 exact / 2 near" in line


def test_exact_means_equal_once_case_punctuation_and_spaces_go() -> None:
    assert entry_fields(entry("Add: 2 + 3!", " Five.  ")) == ("add 2 3", "", "five")
    # The fields stay apart: text moved from input to instruction is another entry.
    assert entry_fields(entry("a", "", "b")) != entry_fields(entry("a b", ""))
    # A preference pair's output is its chosen answer.
    pair = {"instruction": "Add 2 and 3.", "chosen": "5", "rejected": "6"}
    assert entry_fields(pair) == ("add 2 and 3", "", "5")


@pytest.mark.parametrize("threshold", [0.9, 0.6])
def test_the_prefix_search_finds_what_brute_force_finds(threshold: float) -> None:
    rng = random.Random(1)
    base = [sentence(rng, rng.randint(4, 40)) for _ in range(150)]
    # Copies with 0 to 8 words changed: similarities spread on both sides of the thresholds.
    copies = [changed(rng, text, min(rng.randint(0, 8), len(text.split()))) for text in base]
    splits = {
        "train": [entry("q", text) for text in base + copies[:100]],
        "val": [entry("q", text) for text in copies[100:]],
    }
    rows = tfidf_rows({name: [entry_fields(e) for e in es] for name, es in splits.items()})
    for between, other in (("train", "train"), ("train-val", "val")):
        brute = cosine_similarity(rows[other], rows["train"])
        expected = {
            (int(j), int(i))
            for i, j in zip(*np.nonzero(brute >= threshold - 1e-6), strict=True)
            if between != "train" or j < i
        }
        found = near_pairs(rows["train"], rows[other], between, threshold)
        assert {(p.train, p.other) for p in found} == expected
        assert len(expected) >= 5  # the test has pairs to find
        for pair in found:
            assert pair.similarity == pytest.approx(brute[pair.other, pair.train], abs=1e-4)


def test_dedup_drops_duplicates_and_copies_from_train_only() -> None:
    splits = known_copies()
    assert dedup_train(splits, "none") == (splits["train"], {})
    kept, counts = dedup_train(splits, "exact")
    assert counts == {"duplicates": 1, "copies_of_val": 1, "copies_of_test": 1, "kept": 20}
    assert splits["train"][20] not in kept and splits["train"][11] not in kept
    assert splits["train"][3] in kept
    kept, counts = dedup_train(splits, "near")
    assert counts == {"duplicates": 2, "copies_of_val": 1, "copies_of_test": 2, "kept": 18}
    assert {e["output"] for e in kept} == {
        e["output"] for i, e in enumerate(splits["train"]) if i not in {20, 21, 11, 12, 13}
    }
    assert len(splits["val"]) == 2 and len(splits["test"]) == 2
    with pytest.raises(InvalidInput, match="data.dedup='fuzzy'"):
        dedup_train(splits, "fuzzy")


def test_an_entry_dropped_for_two_reasons_counts_once() -> None:
    splits = known_copies()
    splits["val"].append(dict(splits["train"][21]))  # 21, a near copy of 7, is also in val
    _, counts = dedup_train(splits, "near")
    # 21 counts as a duplicate (of 7), not again as a copy of val; 7 (near 21) and 11 do.
    assert counts == {"duplicates": 2, "copies_of_val": 2, "copies_of_test": 2, "kept": 17}


def test_the_command_prints_one_json_object(tmp_path, capsys) -> None:
    data = tmp_path / "data.json"
    splits = known_copies()
    entries = splits["train"] + splits["test"] + splits["val"]
    data.write_text(json.dumps(entries))
    fractions = [f"data.train_fraction={23 / 27}", f"data.test_fraction={2 / 27 + 1e-9}"]
    pairs = tmp_path / "pairs.json"
    main(["--json", "--pairs", str(pairs), f"data.path={data}", *fractions])
    report = json.loads(capsys.readouterr().out)
    assert report["sizes"] == {"train": 23, "val": 2, "test": 2}
    assert {k: report[k] for k in ("train", "train-val", "train-test")} == check_splits(
        splits
    ).counts()
    assert len(json.loads(pairs.read_text())) == 5
    main(["--json", "--threshold", "0.2", "--pairs", str(pairs), f"data.path={data}", *fractions])
    assert json.loads(capsys.readouterr().out)["train"]["near"] > 2  # unrelated entries now too


def test_the_command_reports_mistakes_in_one_line(tmp_path) -> None:
    with pytest.raises(SystemExit, match=r"^error: dataset file .*missing.json does not exist"):
        main([f"data.path={tmp_path / 'missing.json'}", "--pairs", str(tmp_path / "p.json")])
    with pytest.raises(SystemExit, match=r"^error: unknown data 'nope'"):
        main(["data=nope"])


@pytest.mark.slow
def test_52k_entries_in_under_a_minute() -> None:
    rng = random.Random(2)
    vocabulary = [f"w{i}" for i in range(20_000)]
    entries = [
        entry(" ".join(rng.choices(vocabulary, k=12)), " ".join(rng.choices(vocabulary, k=45)))
        for _ in range(52_000)
    ]
    began = time.perf_counter()
    check = check_splits({"train": entries[:44_200], "val": entries[44_200:46_800], "test": []})
    assert isinstance(check, DataCheck)
    assert time.perf_counter() - began < 60
