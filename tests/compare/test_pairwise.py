"""The pairwise judge against the local stand-in: both orders, position bias, resuming."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from lit_sft.compare.models import ModelResults
from lit_sft.compare.pairwise import (
    judge_pairwise,
    parse_choice,
    read_verdicts,
    win_rate,
)
from lit_sft.evaluation.judge import Judge, JudgeSettings
from lit_sft.evaluation.paired import mean_ci95
from tests.helpers.llm_server import FakeLLMServer, Reply

ENTRIES = [
    {"instruction": f"Name the number after {i}.", "input": "", "output": str(i + 1)}
    for i in range(6)
]
GOOD = ModelResults.from_lists("sft", [{**e, "model_response": e["output"]} for e in ENTRIES], {})
BAD = ModelResults.from_lists("base", [{**e, "model_response": "no"} for e in ENTRIES], {})


pytestmark = pytest.mark.usefixtures("no_proxy")  # requests go to a stand-in on 127.0.0.1


def judge(judge_server: FakeLLMServer, **kwargs: Any) -> Judge:
    return Judge(
        JudgeSettings(url=judge_server.url, max_attempts=1, **kwargs), sleep=lambda s: None
    )


def responses(body: Any) -> tuple[str, str]:
    """The two responses a pairwise request shows, in its order."""
    text = body["messages"][-1]["content"]
    first = text.split("Response 1:\n")[1].split("\n\nResponse 2:")[0]
    second = text.split("Response 2:\n")[1].split("\n\nWhich response")[0]
    return first, second


def prefers_the_right_answer(body: Any) -> Reply:
    first, _ = responses(body)
    return Reply("2" if first == "no" else "1")


def test_a_fair_judge_picks_the_better_model_in_both_orders(judge_server, tmp_path) -> None:
    judge_server.reply_for = prefers_the_right_answer
    verdicts = judge_pairwise(BAD, GOOD, judge(judge_server), tmp_path / "pairwise.jsonl")
    assert [v.winner for v in verdicts] == ["b"] * 6
    assert len(judge_server.chats) == 12
    shown = [responses(chat.body) for chat in judge_server.chats]
    assert shown.count(("no", "1")) == 1 and shown.count(("1", "no")) == 1  # both orders
    result = win_rate("base", "sft", verdicts)
    assert (result["wins"], result["ties"], result["losses"], result["win_rate"]) == (6, 0, 0, 1.0)
    assert result["ci95"] == [1.0, 1.0]


def test_a_judge_that_always_prefers_the_first_answer_is_a_tie(judge_server, tmp_path) -> None:
    judge_server.default_reply = Reply("1")
    verdicts = judge_pairwise(BAD, GOOD, judge(judge_server), tmp_path / "pairwise.jsonl")
    result = win_rate("base", "sft", verdicts)
    assert (result["wins"], result["ties"], result["losses"]) == (0, 6, 0)
    assert result["win_rate"] == 0.5 and result["ci95"] == [0.5, 0.5]


def test_win_rate_counts_ties_half_with_a_bootstrap_interval(judge_server, tmp_path) -> None:
    replies = iter(["1", "2", "1", "1", "2", "1", "2", "1", "1", "2", "2", "2"])
    judge_server.reply_for = lambda body: Reply(next(replies))
    verdicts = judge_pairwise(GOOD, BAD, judge(judge_server), tmp_path / "pairwise.jsonl")
    # Per entry (A first, B first): (1,2) a; (1,1) tie; (2,1) b; (2,1) b; (1,2) a; (2,2) tie.
    assert sorted(v.winner for v in verdicts) == ["a", "a", "b", "b", "tie", "tie"]
    result = win_rate("sft", "base", verdicts)
    assert result["win_rate"] == pytest.approx(3 / 6)
    outcomes = np.array([{"b": 1.0, "tie": 0.5, "a": 0.0}[v.winner] for v in verdicts])
    assert result["ci95"] == list(mean_ci95(outcomes))


def test_verdicts_are_kept_and_resumed(judge_server, tmp_path) -> None:
    path = tmp_path / "pairwise.jsonl"
    judge_server.reply_for = prefers_the_right_answer
    judge_server.reply_with("1", "oops")  # the first entry's second order cannot be read: it failed
    first = judge_pairwise(BAD, GOOD, judge(judge_server), path)
    assert [v.winner for v in first].count(None) == 1
    assert win_rate("base", "sft", first)["failed"] == 1
    asked = len(judge_server.chats)
    again = judge_pairwise(BAD, GOOD, judge(judge_server), path)
    assert len(judge_server.chats) == asked + 2  # only the failed entry, in both orders
    assert [v.winner for v in again] == ["b"] * 6
    assert len(read_verdicts(path)) == 6
    # A changed answer is another question: asked again.
    changed = ModelResults.from_lists(
        "sft", [{**e, "model_response": e["output"] + "."} for e in ENTRIES], {}
    )
    judge_pairwise(BAD, changed, judge(judge_server), path)
    assert len(judge_server.chats) == asked + 2 + 12
    assert all(json.loads(line)["key"] for line in path.read_text().splitlines())


def test_parse_choice() -> None:
    assert parse_choice("2") == 2
    assert parse_choice("Response 1 is better.") == 1
    for text in ("3", "none", "12", "1.5"):
        with pytest.raises(ValueError):
            parse_choice(text)
