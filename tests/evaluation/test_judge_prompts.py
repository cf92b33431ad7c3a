"""The judge prompts: the rubric's request, and its grade read from replies as models write them."""

from __future__ import annotations

import pytest

from lit_sft.errors import InvalidInput
from lit_sft.evaluation.judge import Judge, JudgeSettings
from lit_sft.evaluation.judge.prompts import (
    PROMPTS,
    parse_rubric_grade,
    parse_rubric_score,
    prompt_named,
    rubric_prompt,
)
from tests.helpers.llm_server import FakeLLMServer, Reply, rubric_reply

REPLIES = [
    # (reply, grade): as Llama 3, Qwen 2, GPT-4o and Phi-3 answer the rubric prompt.
    (rubric_reply(4), 4),
    (
        "The model response correctly identifies the capital of France as Paris, matching the "
        "correct output exactly.\n\nGrade: 5",
        5,
    ),
    (
        "**Reasoning:** The response converts the sentence to passive voice, but changes the "
        "tense from past to present.\n\n**Grade:** 3",
        3,
    ),
    (
        "Reasoning: The answer lists three fruits, but two of them are vegetables, so it is "
        "mostly wrong.\nGrade: 2/5",
        2,
    ),
    (
        "The response is empty apart from repeating the instruction. It does not attempt the "
        "task.\n\nFinal grade: 1",
        1,
    ),
    (
        "The response gives the right synonym ('rapid') but adds an unrelated sentence. A grade "
        "of 5 would require a clean answer.\n\nGrade: 4",
        4,
    ),
    (
        "The model answered 12 instead of 15; the calculation 3 x 5 was done wrong, though the "
        "format is right.\n\nGrade: 2 out of 5",
        2,
    ),
    ("Grade: 5\n", 5),
    (
        "The translation is accurate and natural.\n\nI would give this response a grade of 5.",
        5,
    ),
    (
        "The model's classification ('positive') matches the reference.\n\nScore: 5",
        5,
    ),
    (
        "Partly correct: the response names the right author but the wrong year (1998 vs "
        "1987).\n\n4",
        4,
    ),
    ("The rhyme is correct but the explanation is off.\n\n**3**", 3),
    ("A grade of 5 needs the units, which the response leaves out.\n\n4", 4),
    ("Mostly accurate summary, one detail missing.\n\nGrade - 4.", 4),
]


@pytest.mark.parametrize(("reply", "grade"), REPLIES)
def test_rubric_grade_is_read_from_real_looking_replies(reply: str, grade: int) -> None:
    assert parse_rubric_grade(reply) == grade
    assert parse_rubric_score(reply) == {1: 0, 2: 25, 3: 50, 4: 75, 5: 100}[grade]


@pytest.mark.parametrize(
    "reply",
    [
        "The response is good.",  # no grade at all
        "Grade: 7",  # off the scale
        "Grade: 0",
        "Grade: 4.5",  # between grades: refused, not rounded
        "Score: 80/100",  # the other prompt's scale
        "",
    ],
)
def test_rubric_replies_without_a_readable_grade_are_refused(reply: str) -> None:
    with pytest.raises(ValueError):
        parse_rubric_grade(reply)


def test_rubric_request_holds_the_entry_and_asks_for_reasoning_then_a_grade() -> None:
    text = rubric_prompt("Name a colour.", "Blue", "Red")
    assert "Name a colour." in text and "Blue" in text and "Red" in text
    assert "reasoning" in text and '"Grade: N"' in text
    assert set(PROMPTS) == {"book", "rubric"}
    with pytest.raises(InvalidInput, match="unknown judge prompt 'fancy'.*book, rubric"):
        prompt_named("fancy")


def test_a_rubric_judge_sends_the_rubric_and_maps_the_grade() -> None:
    server = FakeLLMServer(default_reply=Reply(text=rubric_reply(2)))
    server.start()
    try:
        with Judge(JudgeSettings(url=server.url, prompt="rubric")) as judge:
            result = judge.score("Name a colour.", "Blue", "Red")
    finally:
        server.stop()
    assert (result.score, result.samples) == (25.0, [25])
    assert server.chats[0].body["messages"][0]["content"] == rubric_prompt(
        "Name a colour.", "Blue", "Red"
    )
