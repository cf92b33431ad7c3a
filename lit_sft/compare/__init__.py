"""Comparing evaluation results: `python -m lit_sft.compare <folder> [...] --out <folder>`.

Every scored result of the given folders is loaded once (`load_results`); each report is a
function of those results (`Report`) that gives a Markdown section and its JSON data.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from lit_sft.errors import MissingFile
from lit_sft.evaluation.results import ScoredResult, read_results
from lit_sft.run_dir import EvalDir

# A report: the results -> (its Markdown section, its JSON-ready data).
Report = Callable[[Sequence[ScoredResult]], tuple[str, dict[str, Any]]]


def eval_dir_of(folder: Path) -> EvalDir:
    """The evaluation folder of a run or `out=` folder (its eval/), or `folder` if it is one."""
    for candidate in (folder / "eval", folder):
        if EvalDir(candidate).answers_dirs():
            return EvalDir(candidate)
    raise MissingFile(
        f"{folder} holds no evaluation results (no eval/<answers>/settings.json); "
        "run `python evaluate.py run_dir=<run>` (or answers=<file> out=<folder>) first"
    )


def load_results(folders: Sequence[Path]) -> list[ScoredResult]:
    """Every scored result in the given folders, folder by folder."""
    return [r for folder in folders for r in read_results(eval_dir_of(Path(folder)))]
