"""What the evaluation tests share: a tiny run's copies, the evaluate config, reading results."""

from __future__ import annotations

import json
import shutil
import subprocess
import zlib
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from lit_sft.cli.train import train
from lit_sft.data.entries import split_entries
from lit_sft.data.synthetic import synthetic_entries
from lit_sft.run_dir import AnswersDir, EvalDir, ScoresDir
from tests.helpers.config import REPO, TINY_RUN, compose_config
from tests.helpers.scripts import run_script, script_env

SYNTHETIC_SIZE = int(
    next(o for o in TINY_RUN if o.startswith("data.synthetic_size=")).split("=")[1]
)
QUICK = ["max_new_tokens=4", "batch_size=4"]


def run_evaluate(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`python evaluate.py <args>` as a user runs it, from the repository root."""
    return run_script("evaluate.py", *args, env=env)


def copy_run(run: Path, to: Path, weights: str = "model.safetensors") -> Path:
    """A fresh folder with `run`'s config, summary, events and one of its weights files."""
    shutil.copytree(run / ".hydra", to / ".hydra")
    shutil.copy(run / "summary.json", to / "summary.json")
    shutil.copytree(run / "tb", to / "tb")
    (to / weights).parent.mkdir(parents=True, exist_ok=True)
    (to / weights).symlink_to(run / weights)
    return to


def eval_config(*overrides: str) -> DictConfig:
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(config_name="evaluate", overrides=list(overrides))


def synthetic_test_split(size: int = SYNTHETIC_SIZE) -> list[dict[str, str]]:
    return split_entries(synthetic_entries(size, seed=123))[1]


def read_json(path: Path) -> object:
    return json.loads(path.read_text(encoding="utf-8"))


def results_of(folder: Path) -> list[tuple[AnswersDir, ScoresDir]]:
    """Every (answers, scorer) result under `folder`/eval, by name."""
    return [(a, s) for a in EvalDir(folder / "eval").answers_dirs() for s in a.scores_dirs()]


def answers_file(folder: Path) -> Path:
    """The answers file of the only set of answers under `folder`/eval."""
    (answers,) = EvalDir(folder / "eval").answers_dirs()
    return answers.answers


def only_result(folder: Path) -> ScoresDir:
    """The scorer folder of the only result under `folder`/eval."""
    ((_, scores),) = results_of(folder)
    return scores


def answers_made(folder: Path) -> list[dict[str, object]]:
    """The answers made so far (the file keeps the whole split, null where not answered)."""
    return [r for r in read_json(answers_file(folder)) if r is not None]


def train_tiny_run(run_dir: Path) -> Path:
    """A run folder as `python train.py` leaves it, from a few steps of the tests' tiny GPT."""
    cfg = compose_config(TINY_RUN, run_dir)
    train(cfg)
    # Hydra, not train(), writes the composed config; do what it does.
    (run_dir / ".hydra").mkdir()
    OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")
    return run_dir


def user_env(**extra: str) -> dict[str, str]:
    """The environment of `python evaluate.py` as a user runs it from the repository root."""
    return script_env(PYTHONPATH=str(REPO), **extra)


def score_of(body: dict[str, Any], salt: int = 0) -> int:
    """A judge's score that depends on the question (and `salt`), like a real one."""
    return (zlib.crc32(body["messages"][-1]["content"].encode()) + salt) % 101
