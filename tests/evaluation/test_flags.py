"""Error flags on hand-written answers, each flag shown on and off."""

from __future__ import annotations

import pytest

from lit_sft.data.synthetic import TASK_NAMES, synthetic_entries, synthetic_task
from lit_sft.evaluation.flags import (
    FLAGS,
    answer_flags,
    flag_summary,
    format_flags,
    gpt2_token_counter,
    repeated_ngram_share,
    task_of,
)

QUESTION = {
    "instruction": "Rewrite the sentence in the passive voice.",
    "input": "The chef cooked a delicious meal.",
    "output": "A delicious meal was cooked by the chef.",
}


def flags_of(answer: str, max_new_tokens: int = 256, **fields) -> dict[str, bool]:
    record = {**QUESTION, "model_response": answer, **fields}
    flags = answer_flags(record, max_new_tokens, gpt2_token_counter())
    return {name: getattr(flags, name) for name in FLAGS}


def raised(answer: str, **kwargs) -> set[str]:
    return {name for name, on in flags_of(answer, **kwargs).items() if on}


def test_a_good_answer_raises_no_flag() -> None:
    assert raised("The delicious meal was cooked by the chef.") == set()


def test_empty() -> None:
    assert "empty" in raised("  \n ")
    assert "empty" not in raised("Cooked.")


def test_cut_from_the_answers_fields() -> None:
    answer = "A delicious meal was cooked by the chef."
    assert "cut" in raised(answer, ended=False)
    assert "cut" not in raised(answer, ended=True)
    assert "cut" in raised(answer, max_new_tokens=10, new_tokens=10)
    assert "cut" not in raised(answer, max_new_tokens=10, new_tokens=9)


def test_cut_is_unknown_without_fields_or_a_token_limit() -> None:
    record = {**QUESTION, "model_response": "word " * 300}
    assert not answer_flags(record, None, gpt2_token_counter()).cut
    assert answer_flags({**record, "ended": False}, None, gpt2_token_counter()).cut


def test_cut_estimated_from_gpt2_tokens() -> None:
    answer = "A delicious meal was cooked by the chef."  # 9 GPT-2 tokens
    assert gpt2_token_counter()(answer) == 9
    assert "cut" in raised(answer, max_new_tokens=11)  # 9 >= 11 - 2: whitespace may be gone
    assert "cut" not in raised(answer, max_new_tokens=12)


def test_repetition() -> None:
    assert repeated_ngram_share("a b c d a b c d") == pytest.approx(1 / 5)  # abcd again
    assert repeated_ngram_share("one two three") == 0.0  # no 4-gram
    loop = "The meal was cooked. " * 6  # 24 words, 21 four-grams, 4 distinct
    assert repeated_ngram_share(loop) == pytest.approx(1 - 4 / 21)
    assert "repetition" in raised(loop)
    # The threshold: 11 words looping over 4 make 8 four-grams, 4 distinct (0.5); 10 make 7 (3/7).
    assert repeated_ngram_share("a b c d a b c d a b c") == 0.5
    assert "repetition" in raised("a b c d a b c d a b c")
    assert "repetition" not in raised("a b c d a b c d a b")


def test_copies_prompt() -> None:
    assert "copies_prompt" in raised("Rewrite the sentence in the passive voice")
    assert "copies_prompt" in raised("the chef COOKED a delicious meal!")
    assert "copies_prompt" not in raised("The chef cooked.")
    # A short input (under 4 words) is no copy: its words often belong in the answer.
    short = {**QUESTION, "input": "Paris", "output": "France", "model_response": "Paris"}
    assert not answer_flags(short, 256, len).copies_prompt
    # Nor is an input the reference answer repeats too (an answer that is meant to contain it).
    keep = {**QUESTION, "output": "The chef cooked a delicious meal."}
    assert not answer_flags({**keep, "model_response": keep["output"]}, 256, len).copies_prompt


def test_length_against_the_reference() -> None:
    # The reference has 8 words.
    assert "too_short" in raised("Cooked by chef.")  # 3 / 8
    assert "too_short" not in raised("The meal was cooked.")  # 4 / 8
    long = "A delicious meal was cooked by the chef in the kitchen on a warm summer day."  # 16
    assert "too_long" not in raised(long)
    assert "too_long" in raised(long + " Yes")  # 17 / 8
    no_words = {**QUESTION, "output": "...", "model_response": "anything"}
    flags = answer_flags(no_words, 256, len)
    assert flags.length_ratio is None and not flags.too_long


def test_summary_counts_shares_and_tasks() -> None:
    records = [
        {**QUESTION, "model_response": "", "category": "rewrite"},
        {**QUESTION, "model_response": "Cooked by chef.", "category": "rewrite"},
        {**QUESTION, "model_response": QUESTION["output"], "category": "grammar"},
        {**QUESTION, "model_response": QUESTION["output"]},
    ]
    summary = flag_summary(records, max_new_tokens=256)
    assert summary["answers"] == 4
    assert summary["flags"]["empty"] == {"count": 1, "share": 0.25}
    assert summary["flags"]["too_short"] == {"count": 2, "share": 0.5}  # the empty one too
    assert summary["flags"]["cut"]["count"] == 0
    assert set(summary["definitions"]) == set(FLAGS)
    assert summary["by_task"]["rewrite"]["answers"] == 2
    assert summary["by_task"]["rewrite"]["flags"]["empty"]["count"] == 1
    assert summary["by_task"]["grammar"]["flags"]["too_short"]["count"] == 0
    assert summary["by_task"]["(none)"]["answers"] == 1
    assert format_flags(summary).startswith("empty 1 (25%), cut 0 (0%), repetition 0 (0%)")
    plain = [{k: v for k, v in r.items() if k != "category"} for r in records]
    assert "by_task" not in flag_summary(plain, max_new_tokens=256)


def test_the_synthetic_tasks_come_from_the_instruction() -> None:
    entries = synthetic_entries(300, seed=1)
    tasks = {task_of(entry) for entry in entries}
    assert tasks == set(TASK_NAMES.values())
    assert synthetic_task("Add up the two numbers: 3 + 4") == "add"
    assert synthetic_task("Reverse the letters") is None  # no argument: not one of the set's
    assert task_of({"instruction": "Name a colour.", "task": "open"}) == "open"
