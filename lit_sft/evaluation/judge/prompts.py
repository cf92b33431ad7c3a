"""What the judge is asked and how its reply becomes a 0-100 score: one `JudgePrompt` per name."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from lit_sft.errors import InvalidInput

# The prompt may mention the scale ("On a scale from 0 to 100, I'd give 85"); drop such ranges so
# the first number left is the score.
_SCALE = re.compile(r"\b0\s*(?:-|–|to)\s*100\b", re.IGNORECASE)
# A sign or decimal part is captured so "-3" and "8.5" are rejected instead of read as 3 and 8.
_NUMBER = re.compile(r"(?<![\w.])-?[0-9]+(?:\.[0-9]+)?")
# "Grade: 4", "**Final grade:** 4/5", "grade of 4 out of 5", "Score = 3": the label, then the number
# and an optional "/ n" or "out of n" denominator.
_GRADE = re.compile(
    r"\b(?:grade|score|rating)\b[\s*:=_-]*(?:(?:of|is)\s+)?\**\s*"
    r"(-?[0-9]+(?:\.[0-9]+)?)\**(?:\s*(?:/|out\s+of)\s*([0-9]+))?",
    re.IGNORECASE,
)
# A last line holding the grade alone: "4", "**4**", "4/5", "4."
_BARE_GRADE = re.compile(r"^\W*([0-9]+)\s*(?:/\s*([0-9]+))?\W*$")
RUBRIC_GRADES = 5


def _entry_text(instruction: str, reference: str, response: str) -> str:
    return (
        "You are grading how well a model followed an instruction.\n\n"
        f"Instruction and input:\n{instruction}\n\n"
        f"Correct output:\n{reference}\n\n"
        f"Model response:\n{response}\n\n"
    )


def judge_prompt(instruction: str, reference: str, response: str) -> str:
    """The 0-100 request (after the book's): the score as one integer."""
    return _entry_text(instruction, reference, response) + (
        "Rate the model response on a scale from 0 to 100, where 100 means it is as good as the "
        "correct output. Reply with the integer only."
    )


def rubric_prompt(instruction: str, reference: str, response: str) -> str:
    """The rubric request: a short reasoning, then a 1-5 grade on a last line of its own."""
    return _entry_text(instruction, reference, response) + (
        "Grade the model response against the correct output:\n"
        "5 - correct and complete, as good as the correct output\n"
        "4 - correct, with minor flaws or omissions\n"
        "3 - partly correct, or correct with a notable error\n"
        "2 - mostly wrong, with little that is right\n"
        "1 - wrong, off-topic or empty\n\n"
        "First give your reasoning in two or three sentences. Then end with a last line of the "
        'form "Grade: N", where N is 1, 2, 3, 4 or 5.'
    )


def parse_score(text: str) -> int:
    """The first integer in the judge's reply; ValueError if there is none or it is not in 0-100."""
    match = _NUMBER.search(_SCALE.sub(" ", text))
    if match is None:
        raise ValueError(f"no score in judge reply {text!r}")
    number = match.group()
    if "." in number:
        raise ValueError(f"score {number} is not an integer in judge reply {text!r}")
    score = int(number)
    if not 0 <= score <= 100:
        raise ValueError(f"score {score} is outside 0-100 in judge reply {text!r}")
    return score


def parse_rubric_grade(text: str) -> int:
    """The reply's final 1-5 grade: a last line holding N alone, else the last "Grade: N"."""
    matches = list(_GRADE.finditer(text))
    lines = [line for line in text.strip().splitlines() if line.strip()]
    bare = _BARE_GRADE.match(lines[-1].strip()) if lines else None
    # A last line holding only a number is the grade even if the reasoning mentions another.
    found = bare or (matches[-1] if matches else None)
    if found is None:
        raise ValueError(f"no grade in judge reply {text!r}")
    number, out_of = found.group(1), found.group(2)
    if out_of is not None and int(out_of) != RUBRIC_GRADES:
        raise ValueError(f"grade {number}/{out_of} is not on the 1-5 scale in {text!r}")
    if "." in number or not 1 <= int(number) <= RUBRIC_GRADES:
        raise ValueError(f"grade {number} is not one of 1-5 in judge reply {text!r}")
    return int(number)


def parse_rubric_score(text: str) -> int:
    """The reply's 1-5 grade mapped onto 0-100: 1 -> 0, 2 -> 25, ..., 5 -> 100."""
    return (parse_rubric_grade(text) - 1) * 100 // (RUBRIC_GRADES - 1)


@dataclass(frozen=True)
class JudgePrompt:
    """How to ask for a score and how to read it from the reply."""

    build: Callable[[str, str, str], str]  # (instruction, reference, response) -> request
    parse: Callable[[str], int]  # reply -> 0-100 score; ValueError if unreadable


PROMPTS: Mapping[str, JudgePrompt] = {
    "book": JudgePrompt(judge_prompt, parse_score),
    "rubric": JudgePrompt(rubric_prompt, parse_rubric_score),
}


def prompt_named(name: str) -> JudgePrompt:
    """The judge prompt called `name`."""
    try:
        return PROMPTS[name]
    except KeyError:
        raise InvalidInput(
            f"unknown judge prompt {name!r}, in judge.prompt=; choose one of {', '.join(PROMPTS)}"
        ) from None
