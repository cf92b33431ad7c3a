"""Choosing a pair from scored answers, and the pair file a DPO run trains on."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lit_sft.data.entries import SPLIT_FIELD, Entry

# What became of each prompt, as the summary counts it.
OUTCOMES = ("answer", "reference", "all_tie", "failed")


@dataclass(frozen=True)
class PairRule:
    """Which answers make a pair."""

    # An answer scoring this much or more is right (exact match: 100; a judge: its scale).
    right_score: float = 100.0
    # Where no answer is right, the reference answer is the chosen one; else the prompt is a tie.
    use_reference: bool = True


def choose_pair(
    entry: Entry, answers: Sequence[str], scores: Sequence[float | None], rule: PairRule
) -> tuple[dict[str, str] | None, str]:
    """The pair of one prompt (None if there is none) and its outcome, one of OUTCOMES.

    Chosen: the best answer, or the reference where none is right (`rule.use_reference`);
    rejected: the worst answer (the first of equals). Answers that all score alike make no pair.
    Worked example: scores [100, 0, 100, 0] pair answer 0 over answer 1; [0, 0, 0, 0] pair the
    reference over answer 0; [100] * 4 is a tie.
    """
    if any(score is None for score in scores):
        return None, "failed"
    best = max(range(len(answers)), key=lambda i: scores[i])
    worst = min(range(len(answers)), key=lambda i: scores[i])
    chosen, outcome = answers[best], "answer"
    if scores[best] < rule.right_score and rule.use_reference:
        chosen, outcome = entry["output"], "reference"
    elif scores[best] == scores[worst]:
        return None, "all_tie"
    if chosen.strip() == answers[worst].strip():
        return None, "all_tie"
    pair = {
        "instruction": entry["instruction"],
        "input": entry.get("input", ""),
        "output": entry["output"],
        "chosen": chosen,
        "rejected": answers[worst],
    }
    return pair, outcome


def split_pairs(
    entries: Sequence[Entry],
    answers: Sequence[Sequence[str]],
    scores: Sequence[Sequence[float | None]],
    rule: PairRule,
    split: str,
) -> tuple[list[dict[str, str]], dict[str, int]]:
    """The pairs of one split's prompts, tagged with `split`, and how many prompts had each
    outcome."""
    pairs, counts = [], Counter({outcome: 0 for outcome in OUTCOMES})
    for entry, its_answers, its_scores in zip(entries, answers, scores, strict=True):
        pair, outcome = choose_pair(entry, its_answers, its_scores, rule)
        counts[outcome] += 1
        if pair is not None:
            pairs.append({**pair, SPLIT_FIELD: split})
    return pairs, dict(counts)


def evaluation_entries(entries: Sequence[Entry]) -> list[dict[str, str]]:
    """The SFT run's test entries for the pair file: evaluation scores their `output`.

    Training never reads a test pair; each needs one all the same, so `chosen` is the reference
    and `rejected` the entry's own (a preference set's) or the reference again.
    """
    return [
        {
            "instruction": e["instruction"],
            "input": e.get("input", ""),
            "output": e["output"],
            "chosen": e["output"],
            "rejected": e.get("rejected", e["output"]),
            SPLIT_FIELD: "test",
        }
        for e in entries
    ]


def format_counts(counts: Mapping[str, Mapping[str, Any]]) -> str:
    """Per split: prompts, pairs (answer chosen / reference chosen), ties and failures skipped."""
    lines = [
        f"{'split':<6}{'prompts':>9}{'pairs':>7}{'answer':>8}{'ref.':>6}{'ties':>6}{'fail':>6}"
    ]
    for split, c in counts.items():
        prompts = sum(c[o] for o in OUTCOMES)
        lines.append(
            f"{split:<6}{prompts:>9}{c['answer'] + c['reference']:>7}{c['answer']:>8}"
            f"{c['reference']:>6}{c['all_tie']:>6}{c['failed']:>6}"
        )
    return "\n".join(lines)
