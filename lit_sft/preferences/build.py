"""Preference pairs from a model's own answers: sample, score, choose, write the pair file."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path

from lit_sft.data.entries import Entry
from lit_sft.errors import InvalidInput
from lit_sft.evaluation.judge import Judge
from lit_sft.evaluation.scoring import exact_match_scores, judge_scores
from lit_sft.files import write_json_atomic
from lit_sft.model import GPT
from lit_sft.preferences.pairs import PairRule, split_pairs
from lit_sft.preferences.sampling import SamplingOptions, sample_answers
from lit_sft.prompts import PromptStyle
from lit_sft.run_dir import read_json


def check_sampling(path: Path, options: SamplingOptions) -> None:
    """Records the sampling options in `path`; refuses others than the answers kept were made by."""
    settings = {k: v for k, v in asdict(options).items() if k != "prepack_weights"}
    found = read_json(path)
    if found is None:
        write_json_atomic(path, settings)
    elif found != settings:
        changed = ", ".join(f"{k}={found[k]}" for k in settings if found.get(k) != settings[k])
        raise InvalidInput(
            f"the answers in {path.parent} were sampled with {changed}; pass the same options "
            "to resume, or delete that folder to sample again"
        )


def score_answers(
    entries: Sequence[Entry],
    answers: Sequence[Sequence[str]],
    judge: Judge | None,
    path: Path,
    *,
    progress: bool = True,
) -> list[list[float | None]]:
    """Each answer's score: exact match without a judge, else the judge's (None where it
    failed), its scores kept in `path` so a rerun asks only for the missing ones."""
    flat = [
        {**e, "model_response": a} for e, its in zip(entries, answers, strict=True) for a in its
    ]
    scores = (
        exact_match_scores(flat)
        if judge is None
        else judge_scores(flat, judge, path, progress=progress)
    )
    starts = [0]
    for its in answers:
        starts.append(starts[-1] + len(its))
    return [list(scores[a:b]) for a, b in zip(starts, starts[1:], strict=False)]


def sampled_pairs(
    model: GPT,
    splits: Mapping[str, Sequence[Entry]],
    style: PromptStyle,
    folder: Path,
    options: SamplingOptions,
    rule: PairRule,
    judge: Judge | None = None,
    *,
    progress: bool = True,
) -> tuple[list[dict[str, str]], dict[str, dict[str, int]]]:
    """The pairs of each split's prompts (tagged with the split), and per split the count of
    each outcome; answers and judge scores are kept in `folder` (`<split>-samples.jsonl`,
    `<split>-scores.jsonl`) so that a rerun repeats no finished prompt."""
    check_sampling(folder / "sampling.json", options)
    pairs: list[dict[str, str]] = []
    counts: dict[str, dict[str, int]] = {}
    for split, entries in splits.items():
        answers = sample_answers(
            model,
            entries,
            style,
            folder / f"{split}-samples.jsonl",
            options,
            progress=progress,
            desc=f"sampling {split}",
        )
        scores = score_answers(
            entries, answers, judge, folder / f"{split}-scores.jsonl", progress=progress
        )
        split_pairs_, counts[split] = split_pairs(entries, answers, scores, rule, split)
        pairs += split_pairs_
    return pairs, counts
