"""A synthetic instruction set with exactly checkable answers, generated from a seed.

It needs no download, so it is the offline default, and a tiny model learns it on a CPU in minutes.
"""

from __future__ import annotations

import random
import string
from collections.abc import Callable

from lit_sft.data.entries import Entry


def _letters(rng: random.Random) -> list[str]:
    return rng.choices(string.ascii_lowercase, k=rng.randint(3, 5))


def _spaced(letters: list[str]) -> str:
    # Spaced letters are one GPT-2 token each, so a small model can see (and move) every letter;
    # a word like "qzt" would be BPE fragments whose spelling the model has to learn first.
    return " ".join(letters)


def _reverse(rng: random.Random, inline: bool) -> Entry:
    letters = _letters(rng)
    return _task("Reverse the letters", _spaced(letters), _spaced(letters[::-1]), inline)


def _add(rng: random.Random, inline: bool) -> Entry:
    a, b = rng.randint(0, 20), rng.randint(0, 20)
    return _task("Add the two numbers", f"{a} + {b}", str(a + b), inline)


def _sort_letters(rng: random.Random, inline: bool) -> Entry:
    letters = _letters(rng)
    return _task(
        "Sort the letters alphabetically", _spaced(letters), _spaced(sorted(letters)), inline
    )


def _uppercase(rng: random.Random, inline: bool) -> Entry:
    letters = _letters(rng)
    return _task("Write in uppercase", _spaced(letters), _spaced(letters).upper(), inline)


def _lowercase(rng: random.Random, inline: bool) -> Entry:
    letters = _letters(rng)
    return _task("Write in lowercase", _spaced(letters).upper(), _spaced(letters), inline)


def _task(instruction: str, argument: str, answer: str, inline: bool) -> Entry:
    # The same task appears both with its argument inline and as a separate `input`, so both
    # prompt layouts get trained.
    if inline:
        return {"instruction": f"{instruction}: {argument}", "input": "", "output": answer}
    return {"instruction": f"{instruction}.", "input": argument, "output": answer}


TASKS: tuple[Callable[[random.Random, bool], Entry], ...] = (
    _reverse,
    _add,
    _sort_letters,
    _uppercase,
    _lowercase,
)


def synthetic_entries(num_entries: int, seed: int = 0) -> list[Entry]:
    """`num_entries` instruction entries, the same for the same seed."""
    rng = random.Random(seed)
    return [rng.choice(TASKS)(rng, rng.random() < 0.5) for _ in range(num_entries)]
