"""A run folder: each path in it named once, for the code that writes and the code that reads it.

```
<run>/.hydra/config.yaml        the composed config (what evaluate, chat and resume rebuild from)
<run>/.hydra/overrides.yaml     the command-line overrides (what a sweep report compares)
<run>/summary.json              training's final metrics and costs
<run>/tb/                       TensorBoard events; csv/ the CSV logger's (wandb/: wandb's files)
<run>/loggers.json              how evaluate reopens each logger's run (wandb id, MLflow run id)
<run>/samples.jsonl             the sample answers of the validations
<run>/data-check-pairs.json     the duplicate pairs the data check found (train, train-val, -test)
<run>/checkpoints/last.ckpt     the resumable checkpoint (last-interrupted.ckpt: where a run was
                                stopped); best-step*.ckpt the best weights (callbacks=best)
<run>/model.safetensors         exported weights (Hugging Face GPT-2 layout) + config.json,
                                generation_config.json and the tokenizer files (lit_sft.export)
<run>/reference-logps.json      DPO: the reference's log-probabilities, when precomputed
<run>/eval/                     evaluate's results, keyed by what produced them (EvalDir below)
<run>/preferences.json          pairs from the run's model (python -m lit_sft.preferences); its
                                answers, scores and summary.json in <run>/preferences/
```

An evaluation folder (`<run>/eval`, or `<out>/eval` for `out=`) holds one folder per set of
answers and, in it, one per scorer:

```
eval/<answers>/settings.json           what made the answers: weights sha256, prompt style, test
                                       split sha256, generation settings (or the file and field of
                                       answers made elsewhere)
eval/<answers>/answers.json            the answers in test-split order (null: not answered yet)
eval/<answers>/<scorer>/settings.json  the scorer: exact_match, or the judge's api, url, model,
                                       prompt and options
eval/<answers>/<scorer>/scores.jsonl   a line per entry (and repeat), appended as scored
eval/<answers>/<scorer>/summary.json   the summary of the latest scoring (what, how, how long)
```

`<answers>` reads like `greedy-max256-<hash>` and `<scorer>` like `judge-ollama-llama3-book-<hash>`;
the hash is of the whole settings.json, so any change makes a new folder beside the old ones.
Folders evaluated before results were keyed hold `eval/instruction-data-with-response.json`,
`scores.jsonl` and `eval-summary.json`: read by the sweep report, never reused as a result.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from lit_sft.errors import MissingFile
from lit_sft.hub import WEIGHTS_FILENAME


class RunDir:
    """The folder of one training run."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.config = self.path / ".hydra" / "config.yaml"
        self.overrides = self.path / ".hydra" / "overrides.yaml"
        self.summary = self.path / "summary.json"
        self.tb = self.path / "tb"
        self.csv = self.path / "csv"
        self.loggers = self.path / "loggers.json"
        self.samples = self.path / "samples.jsonl"
        self.data_check_pairs = self.path / "data-check-pairs.json"
        self.checkpoints = self.path / "checkpoints"
        self.last_checkpoint = self.checkpoints / "last.ckpt"
        self.interrupted_checkpoint = self.checkpoints / "last-interrupted.ckpt"
        self.weights = self.path / WEIGHTS_FILENAME
        self.hf_config = self.path / "config.json"
        self.reference_logps = self.path / "reference-logps.json"
        self.eval_dir = self.path / "eval"
        self.eval = EvalDir(self.eval_dir)
        self.preferences = self.path / "preferences.json"
        self.preferences_dir = self.path / "preferences"

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def is_run(self) -> bool:
        """Whether training wrote this folder (it holds the composed config)."""
        return self.config.is_file()

    def read_summary(self) -> dict[str, Any]:
        """summary.json, or {} when the run wrote none."""
        return read_json(self.summary) or {}

    def read_eval_summary(self) -> dict[str, Any] | None:
        """The newest evaluation summary (see `EvalDir.read_latest_summary`), or None."""
        return self.eval.read_latest_summary()

    def read_overrides(self) -> dict[str, str]:
        """The command-line overrides as `key -> value`, without `+`/`++`."""
        lines = yaml.safe_load(self.overrides.read_text()) if self.overrides.is_file() else None
        pairs = (line.lstrip("+").partition("=") for line in lines or [])
        return {key: value for key, _, value in pairs}

    def resumable_checkpoint(self) -> Path | None:
        """What `ckpt_path=last` resumes from: the newer of last.ckpt and last-interrupted.ckpt."""
        saved = [p for p in (self.last_checkpoint, self.interrupted_checkpoint) if p.is_file()]
        return max(saved, key=lambda p: p.stat().st_mtime_ns, default=None)

    def trained_weights(self) -> Path:
        """The weights training left: the exported model.safetensors, else the last checkpoint."""
        for candidate in (self.weights, self.last_checkpoint):
            if candidate.is_file():
                return candidate
        raise MissingFile(
            f"{self.path} holds neither {WEIGHTS_FILENAME} nor checkpoints/last.ckpt; "
            "pass weights=<file> to name the weights"
        )


def _keyed_folders(path: Path) -> list[Path]:
    """The folders in `path` that hold a settings.json, by name."""
    return sorted((p.parent for p in path.glob("*/settings.json")), key=lambda p: p.name)


class EvalDir:
    """An evaluation folder: one `AnswersDir` per set of answers, one `ScoresDir` per scorer."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        # Written before results were keyed by their settings: read by the report, never reused.
        self.legacy_answers = self.path / "instruction-data-with-response.json"
        self.legacy_scores = self.path / "scores.jsonl"
        self.legacy_summary = self.path / "eval-summary.json"

    def __repr__(self) -> str:
        return f"EvalDir({str(self.path)!r})"

    def answers(self, name: str) -> AnswersDir:
        """The folder of the answers called `name`."""
        return AnswersDir(self.path / name)

    def answers_dirs(self) -> list[AnswersDir]:
        """Every set of answers here, by name."""
        return [AnswersDir(folder) for folder in _keyed_folders(self.path)]

    def summaries(self) -> list[Path]:
        """Every summary here, oldest first."""
        paths = [s.summary for a in self.answers_dirs() for s in a.scores_dirs()]
        return sorted((p for p in paths if p.is_file()), key=lambda p: p.stat().st_mtime_ns)

    def read_latest_summary(self) -> dict[str, Any] | None:
        """The newest summary, else the one a pre-keyed evaluation left, else None."""
        summaries = self.summaries()
        return read_json(summaries[-1] if summaries else self.legacy_summary)


class AnswersDir:
    """One set of answers and what made them, with a folder per scorer of them."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.settings = path / "settings.json"
        self.answers = path / "answers.json"

    def __repr__(self) -> str:
        return f"AnswersDir({str(self.path)!r})"

    def scores(self, name: str) -> ScoresDir:
        """The folder of the scorer called `name`."""
        return ScoresDir(self.path / name)

    def scores_dirs(self) -> list[ScoresDir]:
        """Every scorer of these answers, by name."""
        return [ScoresDir(folder) for folder in _keyed_folders(self.path)]


class ScoresDir:
    """One scorer's scores of a set of answers, its settings and the summary."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.settings = path / "settings.json"
        self.scores = path / "scores.jsonl"
        self.summary = path / "summary.json"

    def __repr__(self) -> str:
        return f"ScoresDir({str(self.path)!r})"


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in `path`, or None if there is no such file."""
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def find_run_dirs(folder: Path) -> list[RunDir]:
    """Run folders directly under `folder` (a sweep), or `folder` itself, in job order."""
    if RunDir(folder).is_run():
        return [RunDir(folder)]
    runs = [RunDir(p) for p in folder.iterdir()] if folder.is_dir() else []
    return sorted((r for r in runs if r.is_run()), key=lambda r: natural_key(r.path.name))


def natural_key(name: str) -> list[int | str]:
    """Sort key that orders "10_..." after "9_..." (Hydra numbers jobs 0, 1, ..., 10)."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]
