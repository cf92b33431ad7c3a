"""A synthetic instruction and preference set with exactly checkable answers, from a seed.

It needs no download, so it is the offline default, and a tiny model learns it on a CPU in minutes.
Every entry also carries a preference pair: `chosen` (the exact answer, as `output`) and
`rejected` (a plausible wrong answer: an off-by-one sum, one letter changed, left unsorted, ...).
"""

from __future__ import annotations

import random
import string
from collections.abc import Callable

from lit_sft.data.entries import Entry
from lit_sft.errors import InvalidInput


def _letters(rng: random.Random) -> list[str]:
    # Always three: answer token k then sits at a fixed distance from argument token k (for each
    # task and layout), the easiest case for a small model's attention.
    return rng.choices(string.ascii_lowercase, k=3)


def _spaced(letters: list[str]) -> str:
    # Spaced letters are one GPT-2 token each, so a small model can see (and move) every letter;
    # a word like "qzt" would be BPE fragments whose spelling the model has to learn first.
    return " ".join(letters)


def _one_changed(rng: random.Random, letters: list[str]) -> list[str]:
    """`letters` with one of them replaced by another letter of the same case."""
    index = rng.randrange(len(letters))
    alphabet = string.ascii_uppercase if letters[index].isupper() else string.ascii_lowercase
    wrong = list(letters)
    wrong[index] = rng.choice(alphabet.replace(letters[index], ""))
    return wrong


# Every instruction is 5 GPT-2 tokens and every argument 3, so each argument token, and so each
# answer token, sits at the same position in every prompt: a small model with learned absolute
# positions then learns one attention pattern per task, not one per prompt length (with lengths
# varying by task and layout it did not learn the mix in 1,000 steps).


def _reverse(rng: random.Random) -> Entry:
    letters = _letters(rng)
    answer = letters[::-1]
    return _task("Reverse the letters", letters, answer, _one_changed(rng, answer))


def _add(rng: random.Random) -> Entry:
    a, b = rng.randint(0, 20), rng.randint(0, 20)
    wrong = a + b + (1 if a + b == 0 else rng.choice((-1, 1)))
    return _task("Add up the two numbers", [f"{a} + {b}"], [str(a + b)], [str(wrong)])


def _sort_letters(rng: random.Random) -> Entry:
    letters = _letters(rng)
    answer = sorted(letters)
    wrong = letters if letters != answer else _one_changed(rng, answer)
    return _task("Sort the letters alphabetically", letters, answer, wrong)


def _uppercase(rng: random.Random) -> Entry:
    letters = _letters(rng)
    answer = [letter.upper() for letter in letters]
    return _task("Write in uppercase", letters, answer, _one_unchanged(rng, answer, letters))


def _lowercase(rng: random.Random) -> Entry:
    letters = _letters(rng)
    upper = [letter.upper() for letter in letters]
    return _task("Write it in lowercase", upper, letters, _one_unchanged(rng, letters, upper))


def _one_unchanged(rng: random.Random, answer: list[str], argument: list[str]) -> list[str]:
    """`answer` with one letter left as it was in `argument`: a case change half done."""
    wrong = list(answer)
    index = rng.randrange(len(wrong))
    wrong[index] = argument[index]
    return wrong


def _task(instruction: str, argument: list[str], answer: list[str], wrong: list[str]) -> Entry:
    output = _spaced(answer)
    return {
        "instruction": f"{instruction}: {_spaced(argument)}",
        "input": "",
        "output": output,
        "chosen": output,
        "rejected": _spaced(wrong),
    }


TASKS: tuple[Callable[[random.Random], Entry], ...] = (
    _reverse,
    _add,
    _sort_letters,
    _uppercase,
    _lowercase,
)


# The synthetic entries carry no task field (it would change every entry, and with it every stored
# answer); error analysis reads the task off the instruction's opening words instead.
TASK_NAMES = {
    "Reverse the letters": "reverse",
    "Add up the two numbers": "add",
    "Sort the letters alphabetically": "sort",
    "Write in uppercase": "uppercase",
    "Write it in lowercase": "lowercase",
}


def synthetic_task(instruction: str) -> str | None:
    """The synthetic task an instruction asks for (from its words before ': '); None for others."""
    opening, colon, _ = instruction.partition(": ")
    return TASK_NAMES.get(opening) if colon else None


def synthetic_entries(num_entries: int, seed: int = 0) -> list[Entry]:
    """`num_entries` entries (with their preference pairs), the same for the same seed.

    No question is asked twice, so no test entry is ever a training entry.
    """
    rng = random.Random(seed)
    entries, asked = [], set()
    for _ in range(100 * num_entries):
        entry = rng.choice(TASKS)(rng)
        if entry["instruction"] not in asked:
            asked.add(entry["instruction"])
            entries.append(entry)
            if len(entries) == num_entries:
                # Later draws collide more often on the tasks with few questions (sums).
                rng.shuffle(entries)
                return entries
    raise InvalidInput(
        f"the synthetic tasks have fewer than {num_entries} distinct questions; "
        "pass a smaller data.synthetic_size"
    )
