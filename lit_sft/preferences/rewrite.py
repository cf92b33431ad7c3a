"""The book's preference data: a judge LLM rewrites each reference politely and impolitely."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from tqdm import tqdm

from lit_sft.data.entries import SPLIT_FIELD, Entry
from lit_sft.evaluation.judge import Judge
from lit_sft.preferences.pairs import OUTCOMES
from lit_sft.preferences.records import append_records, read_records
from lit_sft.prompts import prompt_style

POLITENESS = ("polite", "impolite")  # chosen, rejected


def rewrite_prompt(entry: Entry, politeness: str) -> str:
    """The book's request (its notebook's wording): a minimal rewrite, more `politeness`."""
    return (
        f"Given the input `{prompt_style('alpaca').instruction_text(entry)}` "
        f"and correct output `{entry['output']}`, "
        f"slightly rewrite the output to be more {politeness}."
        "Keep the modification minimal."
        "Only return return the generated response and nothing else."
    )


def _rewritten(judge: Judge, entry: Entry, index: int) -> dict[str, Any]:
    record: dict[str, Any] = {"index": index, "error": None}
    for politeness in POLITENESS:
        text, error = judge.ask(rewrite_prompt(entry, politeness), str.strip, judge.settings.seed)
        record[politeness] = text
        record["error"] = record["error"] or error
    return record


def _rewrites(
    entries: Sequence[Entry], todo: Sequence[int], judge: Judge
) -> Iterator[dict[str, Any]]:
    """The record of each entry in `todo` as it is rewritten, `concurrency` at a time."""
    pool = ThreadPoolExecutor(judge.settings.concurrency, thread_name_prefix="rewrite")
    try:
        futures = [pool.submit(_rewritten, judge, entries[i], i) for i in todo]
        for future in as_completed(futures):
            yield future.result()
    finally:
        # Stopped: queued entries are dropped; those without a record are rewritten on resume.
        pool.shutdown(wait=False, cancel_futures=True)


def rewrite_pairs(
    entries: Sequence[Entry], judge: Judge, path: Path, split: str, *, progress: bool = True
) -> tuple[list[dict[str, str]], dict[str, int]]:
    """Pairs (chosen: the polite rewrite, rejected: the impolite one) tagged `split`, and counts.

    Each entry's two rewrites are appended to `path` as they come; a rerun asks again only for
    the entries without both (failures are recorded, and skipped from the pairs, until then).
    """
    done = read_records(path)
    todo = [i for i in range(len(entries)) if done.get(i, {}).get("error", True) is not None]
    if todo:
        judge.check_ready()
        with tqdm(
            total=len(entries),
            initial=len(entries) - len(todo),
            desc=f"rewriting {split}",
            unit="entry",
            disable=not progress,
        ) as bar:
            for record in _rewrites(entries, todo, judge):
                append_records(path, [record])
                done[record["index"]] = record
                bar.update()
    pairs, counts = [], Counter({outcome: 0 for outcome in OUTCOMES})
    for index, entry in enumerate(entries):
        record = done[index]
        if record["error"] is not None:
            counts["failed"] += 1
        elif record["polite"] == record["impolite"]:
            counts["all_tie"] += 1
        else:
            counts["answer"] += 1
            pairs.append(
                {
                    "instruction": entry["instruction"],
                    "input": entry.get("input", ""),
                    "output": entry["output"],
                    "chosen": record["polite"],
                    "rejected": record["impolite"],
                    SPLIT_FIELD: split,
                }
            )
    return pairs, dict(counts)
