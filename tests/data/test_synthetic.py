from __future__ import annotations

from collections import Counter

from lit_sft.data.entries import split_entries
from lit_sft.data.synthetic import synthetic_entries
from lit_sft.prompts import prompt_style
from lit_sft.tokenizer import Tokenizer

ANSWERS = {
    "Reverse the letters": lambda args: args[::-1],
    "Sort the letters alphabetically": sorted,
    "Write in uppercase": lambda args: [a.upper() for a in args],
    "Write it in lowercase": lambda args: [a.lower() for a in args],
    "Add up the two numbers": lambda args: [str(int(args[0]) + int(args[2]))],
}


def test_every_answer_is_right_and_no_question_is_asked_twice() -> None:
    entries = synthetic_entries(2000, seed=5)
    tasks = Counter()
    for entry in entries:
        task, argument = entry["instruction"].split(": ")
        tasks[task] += 1
        assert entry["output"] == entry["chosen"] == " ".join(ANSWERS[task](argument.split()))
        assert entry["rejected"] != entry["output"]
    assert set(tasks) == set(ANSWERS)
    train, test, val = split_entries(entries)
    questions = [{e["instruction"] for e in split} for split in (train, test, val)]
    assert sum(map(len, questions)) == 2000
    assert not (questions[0] & questions[1]) and not (questions[0] & questions[2])


def test_every_prompt_puts_the_argument_at_the_same_positions() -> None:
    tokenizer, phi3 = Tokenizer(), prompt_style("phi3")
    # "<|user|>\n": 6 tokens; instruction and colon: 6; argument: 3; "\n<|assistant|>:\n": 8.
    lengths = {len(tokenizer.encode(phi3.prompt(e))) for e in synthetic_entries(1000, seed=5)}
    assert lengths == {23}
