"""Comparing several models: pairs and metrics, the entries they differ most on, the files."""

from __future__ import annotations

import json
import random

import pytest

from lit_sft.compare.models import ModelResults, compare_models
from lit_sft.compare.render import write_outputs
from lit_sft.errors import InvalidInput
from lit_sft.evaluation.paired import paired_stats

ENTRIES = [
    {"instruction": f"Add up the two numbers: {i} + 1", "input": "", "output": str(i + 1)}
    for i in range(8)
]


def model(name: str, answers: list[str], judge: list[float] | None = None) -> ModelResults:
    answered = [{**e, "model_response": a} for e, a in zip(ENTRIES, answers, strict=True)]
    exact = [100.0 if a == e["output"] else 0.0 for e, a in zip(ENTRIES, answers, strict=True)]
    scores = {"exact_match": exact} | ({"judge": judge} if judge else {})
    return ModelResults.from_lists(name, answered, scores)


BASE = model(
    "base", ["", "2", "x " * 10, "4", "5", "", "7", "0"], judge=[0, 50, 0, 60, 90, 0, 70, 10]
)
SFT = model(
    "sft", ["1", "2", "3", "4", "5", "6", "7", "8"], judge=[90, 100, 80, 90, 100, 95, 85, 95]
)
DPO = model("dpo", ["1", "2", "3", "4", "5", "6", "7", "9"])


def test_every_pair_and_shared_metric() -> None:
    comparison = compare_models([BASE, SFT, DPO], worst=3)
    pairs = [(p["a"], p["b"], p["metric"]) for p in comparison["pairs"]]
    assert pairs == [
        ("base", "sft", "exact_match"),
        ("base", "sft", "judge"),
        ("base", "dpo", "exact_match"),
        ("sft", "dpo", "exact_match"),
    ]
    base_sft = comparison["pairs"][0]
    expected = paired_stats(BASE.scores["exact_match"], SFT.scores["exact_match"]).as_dict()
    assert {k: base_sft[k] for k in expected} == expected
    assert (base_sft["wins"], base_sft["ties"], base_sft["losses"]) == (4, 4, 0)
    sft_dpo = comparison["pairs"][3]
    assert (sft_dpo["wins"], sft_dpo["ties"], sft_dpo["losses"]) == (0, 7, 1)
    assert comparison["models"]["base"]["metrics"]["exact_match"] == 50.0
    assert comparison["models"]["base"]["flags"]["flags"]["empty"]["count"] == 2
    assert comparison["models"]["base"]["flags"]["flags"]["repetition"]["count"] == 1


def test_the_entries_that_differ_most_come_first() -> None:
    judged = compare_models([BASE, SFT], worst=2)["pairs"][1]
    # |sft - base| per entry: 90 50 80 30 10 95 15 85: entries 5 and 0 first.
    assert [row["diff"] for row in judged["worst"]] == [95, 90]
    assert judged["worst"][0]["instruction"] == ENTRIES[5]["instruction"]
    assert judged["worst"][0]["answer_a"] == "" and judged["worst"][0]["answer_b"] == "6"
    assert judged["worst"][0]["reference"] == "6"
    # Entries scored alike are no difference: sft and dpo differ on one entry only.
    (sft_dpo,) = compare_models([SFT, DPO], worst=5)["pairs"]
    assert [row["reference"] for row in sft_dpo["worst"]] == ["8"]


def test_models_in_another_order_are_matched_by_content() -> None:
    order = list(range(8))
    random.Random(3).shuffle(order)
    answers = ["1", "2", "3", "4", "5", "6", "7", "8"]
    answered = [{**ENTRIES[i], "model_response": answers[i]} for i in order]
    shuffled = ModelResults.from_lists("sft", answered, {"exact_match": [100.0] * 8})
    pair = compare_models([BASE, shuffled])["pairs"][0]
    assert pair["diff"] == 50.0 and pair["losses"] == 0


def test_mistakes_are_user_errors() -> None:
    with pytest.raises(InvalidInput, match="different names"):
        compare_models([SFT, SFT])
    other = ModelResults.from_lists(
        "other", [{**ENTRIES[0], "model_response": "1"}], {"judge": [1]}
    )
    with pytest.raises(InvalidInput, match="share no metric"):
        compare_models([DPO, other])
    another = {"instruction": "Add up the two numbers: 9 + 9", "input": "", "output": "18"}
    mismatched = ModelResults.from_lists(
        "other", [{**another, "model_response": "18"}], {"exact_match": [100.0]}
    )
    with pytest.raises(InvalidInput, match="different test splits"):
        compare_models([DPO, mismatched])


def test_outputs(tmp_path) -> None:
    paths = write_outputs(compare_models([BASE, SFT, DPO], worst=2), tmp_path)
    figures = json.loads(paths["json"].read_text())
    assert set(figures["pairs"][0]) >= {
        "n",
        "mean_a",
        "mean_b",
        "diff",
        "ci95",
        "wins",
        "ties",
        "losses",
        "p_value",
    }
    text = paths["md"].read_text()
    assert "| base | sft | exact_match | 8 | 50.00 | 100.00 | +50.00 |" in text
    assert "### base vs sft, judge: the entries they differ most on" in text
    assert "| base | add | 8 |" in text  # the synthetic task, per model
    # The paired statistics within the task (every entry here is an addition).
    assert "| base | sft | exact_match | add | 8 | 50.00 | 100.00 | +50.00 |" in text
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_per_task_statistics_show_a_gain_paid_for_by_a_loss() -> None:
    # Four sorts B gets right and A wrong, four reversals the other way: overall no difference.
    entries = [
        {"instruction": f"Sort the letters alphabetically: {c} b a", "output": f"a b {c}"}
        for c in "wxyz"
    ] + [{"instruction": f"Reverse the letters: a b {c}", "output": f"{c} b a"} for c in "wxyz"]
    right, wrong = [e["output"] for e in entries], ["?"] * 8

    def results(name: str, answers: list[str]) -> ModelResults:
        answered = [{**e, "model_response": r} for e, r in zip(entries, answers, strict=True)]
        exact = [100.0 * (r == e["output"]) for e, r in zip(entries, answers, strict=True)]
        return ModelResults.from_lists(name, answered, {"exact_match": exact})

    a = results("a", wrong[:4] + right[4:])
    b = results("b", right[:4] + wrong[4:])
    pair = compare_models([a, b])["pairs"][0]
    assert pair["diff"] == 0.0
    sort, reverse = pair["by_task"]["sort"], pair["by_task"]["reverse"]
    assert (sort["n"], sort["diff"], sort["wins"], sort["losses"]) == (4, 100.0, 4, 0)
    assert (reverse["n"], reverse["diff"], reverse["wins"], reverse["losses"]) == (4, -100.0, 0, 4)
    assert sort["ci95"] == [100.0, 100.0]  # every difference is +100: nothing to resample
    assert sort["p_value"] == pytest.approx(0.125)  # 4 wins of 4 signs: 2 x 0.5^4


def test_per_task_statistics_pair_only_the_entries_both_scored() -> None:
    # B answered the first 3 of the 4 sorts (a smaller limit): the task pairs 3 entries.
    sorts = [
        {"instruction": f"Sort the letters alphabetically: {c} b a", "output": f"a b {c}"}
        for c in "wxyz"
    ]
    answered = [{**e, "model_response": e["output"]} for e in sorts]
    a = ModelResults.from_lists("a", answered, {"exact_match": [0.0, 0.0, 100.0, 0.0]})
    b = ModelResults.from_lists("b", answered[:3], {"exact_match": [100.0, 0.0, 100.0]})
    sort = compare_models([a, b])["pairs"][0]["by_task"]["sort"]
    assert (sort["n"], sort["wins"], sort["ties"], sort["losses"]) == (3, 1, 2, 0)
    assert sort["diff"] == pytest.approx(100 / 3)


def test_no_per_task_statistics_without_tasks() -> None:
    plain = [{"instruction": f"q{i}", "output": "x", "model_response": "x"} for i in range(3)]
    a = ModelResults.from_lists("a", plain, {"exact_match": [100.0] * 3})
    b = ModelResults.from_lists("b", plain, {"exact_match": [0.0, 100.0, 100.0]})
    assert compare_models([a, b])["pairs"][0]["by_task"] == {}
