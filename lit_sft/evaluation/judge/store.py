"""The judge's scores on disk: a JSON line per entry and repeat, appended as it comes, read back
on resume."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict
from pathlib import Path
from typing import IO, Any

from tqdm import tqdm

from lit_sft.evaluation.judge.client import Judge, JudgeResult
from lit_sft.files import open_for_append


def read_all_scores(scores_path: Path) -> dict[tuple[int, int], JudgeResult]:
    """The results in a scores file by (entry, repeat); later lines win, bad ones are skipped.

    Lines written before repeats existed carry no `repeat`: they are repeat 0.
    """
    results: dict[tuple[int, int], JudgeResult] = {}
    if not scores_path.exists():
        return results
    for line in scores_path.read_text(encoding="utf-8").splitlines():
        # A run killed mid-write leaves a partial line; that entry is simply scored again.
        try:
            record = json.loads(line)
            result = JudgeResult(record["score"], list(record["samples"]), record["error"])
            results[int(record["index"]), int(record.get("repeat", 0))] = result
        except (ValueError, KeyError, TypeError):
            continue
    return results


def read_scores(scores_path: Path, repeat: int = 0) -> dict[int, JudgeResult]:
    """The results of one repeat recorded in a scores file, by entry."""
    return {i: r for (i, rep), r in read_all_scores(scores_path).items() if rep == repeat}


def _append(f: IO[str], index: int, repeat: int, result: JudgeResult) -> None:
    record = {"index": index, "repeat": repeat} | asdict(result)
    f.write(json.dumps(record) + "\n")
    f.flush()
    os.fsync(f.fileno())


Key = tuple[int, int]  # (entry index, repeat)


def _scored(
    entries: list[dict[str, Any]], todo: Sequence[Key], judge: Judge
) -> Iterator[tuple[Key, JudgeResult]]:
    """((index, repeat), result) of each pair in `todo` as scored, `concurrency` at a time."""

    def score(key: Key) -> tuple[Key, JudgeResult]:
        entry = entries[key[0]]
        texts = (entry["instruction_text"], entry["output"], entry["model_response"])
        # Repeat 0 is the plain call, so a Judge subclass written before repeats keeps working.
        return key, judge.score(*texts, repeat=key[1]) if key[1] else judge.score(*texts)

    if judge.settings.concurrency == 1:
        yield from map(score, todo)
        return
    pool = ThreadPoolExecutor(judge.settings.concurrency, thread_name_prefix="judge")
    try:
        for future in as_completed([pool.submit(score, i) for i in todo]):
            yield future.result()
    finally:
        # Stopped (an error, Ctrl-C): queued entries are dropped, requests in flight end on
        # their own; entries without a line in the scores file are scored on resume.
        pool.shutdown(wait=False, cancel_futures=True)


def score_entries(
    entries: list[dict[str, Any]], judge: Judge, scores_path: Path, *, progress: bool = True
) -> dict[int, JudgeResult]:
    """Score every entry not yet scored in `scores_path`, appending one JSON line per entry.

    Lines are appended as scores arrive, so with `concurrency` > 1 not in entry order; each line
    carries its entry's index, and the results are returned in entry order.
    """
    return score_repeats(entries, judge, scores_path, repeats=1, progress=progress)[0]


def score_repeats(
    entries: list[dict[str, Any]],
    judge: Judge,
    scores_path: Path,
    *,
    repeats: int,
    progress: bool = True,
) -> list[dict[int, JudgeResult]]:
    """`score_entries` `repeats` times over (repeat r with its own seeds); results per repeat."""
    results = read_all_scores(scores_path)
    keys = [(i, r) for r in range(repeats) for i in range(len(entries))]
    todo = [k for k in keys if k not in results or results[k].score is None]
    if todo:
        judge.check_ready()
        failed = 0
        with (
            open_for_append(scores_path) as f,
            tqdm(
                total=len(keys),
                initial=len(keys) - len(todo),
                desc="judging",
                unit="entry",
                disable=not progress,
            ) as bar,
        ):
            for key, result in _scored(entries, todo, judge):
                _append(f, *key, result)
                results[key] = result
                failed += result.score is None
                bar.set_postfix(failed=failed)
                bar.update()
    return [{i: results[i, r] for i in range(len(entries))} for r in range(repeats)]
