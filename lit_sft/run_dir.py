"""A run folder: each path in it named once, for the code that writes and the code that reads it.

```
<run>/.hydra/config.yaml        the composed config (what evaluate, chat and resume rebuild from)
<run>/.hydra/overrides.yaml     the command-line overrides (what a sweep report compares)
<run>/summary.json              training's final metrics and costs
<run>/tb/                       TensorBoard events; csv/ the CSV logger's (wandb/: wandb's files)
<run>/loggers.json              how evaluate reopens each logger's run (wandb id, MLflow run id)
<run>/samples.jsonl             the sample answers of the validations
<run>/checkpoints/last.ckpt     the resumable checkpoint (last-interrupted.ckpt: where a run was
                                stopped); best-step*.ckpt the best weights (callbacks=best)
<run>/model.safetensors         exported weights (Hugging Face GPT-2 layout) + config.json,
                                generation_config.json and the tokenizer files (lit_sft.export)
<run>/reference-logps.json      DPO: the reference's log-probabilities, when precomputed
<run>/eval/                     evaluate's answers, scores and eval-summary.json
```
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
        self.checkpoints = self.path / "checkpoints"
        self.last_checkpoint = self.checkpoints / "last.ckpt"
        self.interrupted_checkpoint = self.checkpoints / "last-interrupted.ckpt"
        self.weights = self.path / WEIGHTS_FILENAME
        self.hf_config = self.path / "config.json"
        self.reference_logps = self.path / "reference-logps.json"
        self.eval_dir = self.path / "eval"
        self.answers = self.eval_dir / "instruction-data-with-response.json"
        self.scores = self.eval_dir / "scores.jsonl"
        self.eval_summary = self.eval_dir / "eval-summary.json"

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def is_run(self) -> bool:
        """Whether training wrote this folder (it holds the composed config)."""
        return self.config.is_file()

    def read_summary(self) -> dict[str, Any]:
        """summary.json, or {} when the run wrote none."""
        return read_json(self.summary) or {}

    def read_eval_summary(self) -> dict[str, Any] | None:
        """eval/eval-summary.json, or None when the run was not evaluated."""
        return read_json(self.eval_summary)

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
