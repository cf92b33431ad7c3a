"""Error analysis: what is wrong with each answer (empty, cut off, looping, copying, length).

The flags, per answer (the definitions every summary repeats, `FLAG_DEFINITIONS`):
- empty: nothing but whitespace.
- cut: generation stopped at `max_new_tokens` (or the context) without an end-of-text. Read from
  the answer's `ended` field (or `new_tokens`) when the answers file has one; else estimated from
  the answer's GPT-2 tokens, which lost their surrounding whitespace when the answer was extracted,
  so it counts as cut from `max_new_tokens - CUT_SLACK` tokens.
- repetition: at least REPETITION_THRESHOLD of the answer's word 4-grams repeat an earlier 4-gram
  of the answer (a model stuck in a loop); answers of fewer than 4 words never are.
- copies_prompt: the answer contains the instruction, or an input of at least MIN_COPIED_WORDS
  words, word for word (case and punctuation aside), and the reference answer does not.
- too_short / too_long: the answer's words over the reference's below TOO_SHORT or above TOO_LONG.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from lit_sft.data.synthetic import synthetic_task

NGRAM = 4
REPETITION_THRESHOLD = 0.5
MIN_COPIED_WORDS = 4
TOO_SHORT = 0.5
TOO_LONG = 2.0
CUT_SLACK = 2
FLAGS = ("empty", "cut", "repetition", "copies_prompt", "too_short", "too_long")
FLAG_DEFINITIONS = {
    "empty": "the answer is empty or whitespace",
    "cut": "stopped at max_new_tokens without an end-of-text (the answer's `ended` field; else "
    f"its GPT-2 tokens >= max_new_tokens - {CUT_SLACK})",
    "repetition": f"share of the answer's word {NGRAM}-grams that repeat an earlier one "
    f">= {REPETITION_THRESHOLD}",
    "copies_prompt": "the answer contains the instruction, or an input of at least "
    f"{MIN_COPIED_WORDS} words, and the reference does not",
    "too_short": f"answer words / reference words < {TOO_SHORT}",
    "too_long": f"answer words / reference words > {TOO_LONG}",
}


def words(text: str) -> list[str]:
    """The lowercased words of `text`, punctuation dropped."""
    return re.findall(r"\w+", text.lower())


def repeated_ngram_share(text: str, n: int = NGRAM) -> float:
    """The share of the word n-grams of `text` that repeat an earlier one (0 below n words)."""
    tokens = words(text)
    ngrams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    if not ngrams:
        return 0.0
    return 1 - len(set(ngrams)) / len(ngrams)


def _contains(text_words: list[str], part_words: list[str]) -> bool:
    # Padded with spaces, so that only whole words match.
    return f" {' '.join(part_words)} " in f" {' '.join(text_words)} "


def copies_prompt(answer: str, instruction: str, input_text: str, reference: str) -> bool:
    """Whether `answer` repeats the instruction or a non-trivial input that `reference` does not."""
    answer_words, reference_words = words(answer), words(reference)
    copied = [words(instruction)]
    if len(words(input_text)) >= MIN_COPIED_WORDS:
        copied.append(words(input_text))
    return any(
        part and _contains(answer_words, part) and not _contains(reference_words, part)
        for part in copied
    )


def length_ratio(answer: str, reference: str) -> float | None:
    """The answer's words over the reference's; None for a reference without words."""
    reference_words = len(words(reference))
    return len(words(answer)) / reference_words if reference_words else None


@dataclass(frozen=True)
class AnswerFlags:
    """The flags of one answer, with the measures two of them threshold."""

    empty: bool
    cut: bool
    repetition: bool
    copies_prompt: bool
    too_short: bool
    too_long: bool
    repeated_share: float
    length_ratio: float | None


def was_cut(
    record: Mapping[str, Any], max_new_tokens: int | None, count_tokens: Callable[[str], int]
) -> bool:
    """Whether generation stopped without an end-of-text (see the module docstring).

    Without an `ended` field nor a known `max_new_tokens` (answers made elsewhere), never.
    """
    if "ended" in record:
        return not record["ended"]
    if max_new_tokens is None:
        return False
    if "new_tokens" in record:
        return record["new_tokens"] >= max_new_tokens
    return count_tokens(record["model_response"]) >= max_new_tokens - CUT_SLACK


def answer_flags(
    record: Mapping[str, Any], max_new_tokens: int | None, count_tokens: Callable[[str], int]
) -> AnswerFlags:
    """The flags of one answered entry (an entry with its `model_response`)."""
    answer, reference = record["model_response"], record["output"]
    share = repeated_ngram_share(answer)
    ratio = length_ratio(answer, reference)
    return AnswerFlags(
        empty=not answer.strip(),
        cut=was_cut(record, max_new_tokens, count_tokens),
        repetition=share >= REPETITION_THRESHOLD,
        copies_prompt=copies_prompt(
            answer, record["instruction"], record.get("input") or "", reference
        ),
        too_short=ratio is not None and ratio < TOO_SHORT,
        too_long=ratio is not None and ratio > TOO_LONG,
        repeated_share=share,
        length_ratio=ratio,
    )


def task_of(entry: Mapping[str, Any]) -> str | None:
    """The entry's task or category: its own field, else the synthetic task of its instruction."""
    return entry.get("task") or entry.get("category") or synthetic_task(entry["instruction"])


def _counts(flags: Sequence[AnswerFlags]) -> dict[str, Any]:
    total = len(flags)
    counts = {name: sum(asdict(f)[name] for f in flags) for name in FLAGS}
    return {
        "answers": total,
        "flags": {
            name: {"count": count, "share": count / total if total else 0.0}
            for name, count in counts.items()
        },
    }


def gpt2_token_counter() -> Callable[[str], int]:
    """The number of GPT-2 tokens of a text (the tokenizer loaded at the first text)."""
    from lit_sft.tokenizer import Tokenizer

    tokenizers: list[Tokenizer] = []

    def count(text: str) -> int:
        if not tokenizers:
            tokenizers.append(Tokenizer())
        return len(tokenizers[0].encode(text))

    return count


def flag_summary(
    records: Sequence[Mapping[str, Any]],
    max_new_tokens: int | None,
    count_tokens: Callable[[str], int] | None = None,
) -> dict[str, Any]:
    """Counts and shares of each flag over `records`, and per task where entries have one."""
    counter = count_tokens or gpt2_token_counter()
    flags = [answer_flags(record, max_new_tokens, counter) for record in records]
    summary = {**_counts(flags), "definitions": FLAG_DEFINITIONS}
    by_task: dict[str, list[AnswerFlags]] = defaultdict(list)
    for record, answer in zip(records, flags, strict=True):
        by_task[task_of(record) or "(none)"].append(answer)
    if set(by_task) != {"(none)"}:
        summary["by_task"] = {task: _counts(by_task[task]) for task in sorted(by_task)}
    return summary


def format_flags(summary: Mapping[str, Any]) -> str:
    """The flag counts on one line: `empty 2 (1 %), cut 0 (0 %), ...`."""
    flags = summary["flags"]
    return ", ".join(f"{n} {flags[n]['count']} ({flags[n]['share']:.0%})" for n in FLAGS)
