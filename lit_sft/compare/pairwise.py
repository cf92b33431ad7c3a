"""A judge asked which of two answers is better, in both orders, so position bias cancels.

For each entry the judge sees (A, B) and then (B, A). Both picks naming one model make it the
winner; picks that disagree (the judge preferred a position, not an answer) count as a tie. B's win
rate is (wins + ties / 2) / judged, with a bootstrap 95 % interval over the entries. Every
verdict is appended to a JSON Lines file under a key of what produced it (the entry, both answers,
the judge model and prompt), so a stopped comparison resumes and a changed answer is asked again.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lit_sft.compare.models import ModelResults
from lit_sft.evaluation.judge import Judge
from lit_sft.evaluation.paired import mean_ci95
from lit_sft.files import open_for_append
from lit_sft.prompts import prompt_style

PROMPT_VERSION = 1
_CHOICE = re.compile(r"(?<![\w.])[12](?![\w.])")


def pairwise_prompt(instruction: str, reference: str, first: str, second: str) -> str:
    """The request asking the judge which of two responses is better."""
    return (
        "You are comparing how well two models followed an instruction.\n\n"
        f"Instruction and input:\n{instruction}\n\n"
        f"Correct output:\n{reference}\n\n"
        f"Response 1:\n{first}\n\n"
        f"Response 2:\n{second}\n\n"
        "Which response is better? Reply with 1 or 2 only."
    )


def parse_choice(text: str) -> int:
    """The 1 or 2 the judge replied (its first such number); ValueError if there is none."""
    match = _CHOICE.search(text)
    if match is None:
        raise ValueError(f"no choice (1 or 2) in judge reply {text!r}")
    return int(match.group())


@dataclass(frozen=True)
class Verdict:
    """The judge's pick with A first and with B first (None: failed), for one entry."""

    key: str
    entry: str
    a_first: int | None
    b_first: int | None
    error: str | None = None

    @property
    def winner(self) -> str | None:
        """ "a", "b", "tie" (the orders disagree), or None if an order failed."""
        if self.a_first is None or self.b_first is None:
            return None
        a_won = (self.a_first == 1, self.b_first == 2)
        if all(a_won):
            return "a"
        return "b" if not any(a_won) else "tie"


def verdict_key(entry: str, answer_a: str, answer_b: str, judge_model: str) -> str:
    """The key of one verdict: what produced it."""
    content = [entry, answer_a, answer_b, judge_model, PROMPT_VERSION]
    return hashlib.sha256(json.dumps(content).encode("utf-8")).hexdigest()[:16]


def read_verdicts(path: Path) -> dict[str, Verdict]:
    """The verdicts recorded in `path` by key; later lines win, unreadable lines are skipped."""
    verdicts: dict[str, Verdict] = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                verdict = Verdict(**json.loads(line))
            except (ValueError, TypeError):
                continue  # a line cut short by a stopped run: that entry is asked again
            verdicts[verdict.key] = verdict
    return verdicts


def ask_both_orders(judge: Judge, key: str, entry: str, task: dict[str, str]) -> Verdict:
    """The judge's picks for one entry, A first and then B first."""
    picks, errors = [], []
    for first, second in (("answer_a", "answer_b"), ("answer_b", "answer_a")):
        prompt = pairwise_prompt(task["instruction"], task["reference"], task[first], task[second])
        pick, error = judge.ask(prompt, parse_choice, judge.settings.seed)
        picks.append(pick)
        if error:
            errors.append(error)
    return Verdict(key, entry, picks[0], picks[1], "; ".join(errors) or None)


def _asked(judge: Judge, todo: Sequence[tuple[str, str, dict[str, str]]]) -> Iterator[Verdict]:
    if judge.settings.concurrency == 1:
        yield from (ask_both_orders(judge, *item) for item in todo)
        return
    with ThreadPoolExecutor(judge.settings.concurrency, thread_name_prefix="pairwise") as pool:
        yield from pool.map(lambda item: ask_both_orders(judge, *item), todo)


def judge_pairwise(a: ModelResults, b: ModelResults, judge: Judge, path: Path) -> list[Verdict]:
    """Each shared entry's verdict, asking only those `path` lacks (or that failed)."""
    alpaca = prompt_style("alpaca")
    done = read_verdicts(path)
    verdicts, todo = {}, []
    for entry in sorted(a.answers.keys() & b.answers.keys()):
        record = a.answers[entry]
        answer_a, answer_b = record["model_response"], b.answers[entry]["model_response"]
        key = verdict_key(entry, answer_a, answer_b, judge.settings.model)
        if key in done and done[key].winner is not None:
            verdicts[entry] = done[key]
            continue
        task = {
            "instruction": alpaca.instruction_text(record),
            "reference": record["output"],
            "answer_a": answer_a,
            "answer_b": answer_b,
        }
        todo.append((key, entry, task))
    if todo:
        judge.check_ready()
        with open_for_append(path) as f:
            for verdict in _asked(judge, todo):
                f.write(json.dumps(asdict(verdict)) + "\n")
                f.flush()
                os.fsync(f.fileno())
                verdicts[verdict.entry] = verdict
    return [verdicts[entry] for entry in sorted(verdicts)]


def win_rate(a: str, b: str, verdicts: Sequence[Verdict]) -> dict[str, Any]:
    """B's wins, ties, losses and win rate (ties count half) with its bootstrap interval."""
    winners = [v.winner for v in verdicts if v.winner is not None]
    outcomes = np.array([{"b": 1.0, "tie": 0.5, "a": 0.0}[w] for w in winners])
    low, high = mean_ci95(outcomes) if len(outcomes) else (None, None)
    return {
        "a": a,
        "b": b,
        "n": len(winners),
        "wins": winners.count("b"),
        "ties": winners.count("tie"),
        "losses": winners.count("a"),
        "win_rate": float(outcomes.mean()) if len(outcomes) else None,
        "ci95": [low, high],
        "failed": len(verdicts) - len(winners),
    }
