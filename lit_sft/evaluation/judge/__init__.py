"""A judge LLM scoring answers 0-100: one client, one adapter per server API, a resumable store."""

from lit_sft.evaluation.judge.api import JudgeSettings
from lit_sft.evaluation.judge.client import Judge, JudgeResult, JudgeUnavailable
from lit_sft.evaluation.judge.prompts import PROMPTS, parse_rubric_score, parse_score
from lit_sft.evaluation.judge.store import read_scores, score_entries, score_repeats

__all__ = [
    "Judge",
    "JudgeResult",
    "JudgeSettings",
    "JudgeUnavailable",
    "PROMPTS",
    "parse_rubric_score",
    "parse_score",
    "read_scores",
    "score_entries",
    "score_repeats",
]
