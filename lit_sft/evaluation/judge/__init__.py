"""A judge LLM scoring answers 0-100: one client, one adapter per server API, a resumable store."""

from lit_sft.evaluation.judge.api import JudgeSettings
from lit_sft.evaluation.judge.client import Judge, JudgeResult, JudgeUnavailable, parse_score
from lit_sft.evaluation.judge.store import read_scores, score_entries

__all__ = [
    "Judge",
    "JudgeResult",
    "JudgeSettings",
    "JudgeUnavailable",
    "parse_score",
    "read_scores",
    "score_entries",
]
