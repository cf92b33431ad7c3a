"""`python -m lit_sft.preferences run_dir=<sft run>`: preference pairs from a run's own model."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from lit_sft.checkpoints import load_model
from lit_sft.cli.errors import one_line_user_errors
from lit_sft.cli.sources import device_of, model_config
from lit_sft.data.entries import Entry
from lit_sft.errors import InvalidInput, MissingFile
from lit_sft.evaluation.judge import Judge, JudgeSettings
from lit_sft.files import write_json_atomic
from lit_sft.preferences import (
    PairRule,
    SamplingOptions,
    evaluation_entries,
    rewrite_pairs,
    sampled_pairs,
)
from lit_sft.preferences.pairs import format_counts
from lit_sft.prompts import prompt_style
from lit_sft.run_dir import RunDir

log = logging.getLogger(__name__)
PAIRS = ("sample", "rewrite")
# An absolute path: run as `python -m`, Hydra would read a relative one as a Python package.
CONF_DIR = str(Path(__file__).resolve().parents[2] / "conf")
SCORERS = ("exact_match", "judge")


def run_splits(run: RunDir, cfg: DictConfig) -> tuple[DictConfig, dict[str, list[Entry]]]:
    """The run's config, and its train (first `limit`), val (first `val_limit`) and test splits."""
    if not run.is_run():
        raise MissingFile(
            f"{run.path} is not a training run (no .hydra/config.yaml); "
            "pass run_dir=<the folder of an SFT run>"
        )
    source = OmegaConf.load(run.config)
    source.run_dir = str(run.path)
    datamodule = instantiate(source.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    splits = datamodule.splits
    limits = {"train": cfg.limit, "val": cfg.val_limit, "test": None}
    return source, {name: splits[name][: limits[name]] for name in ("train", "val", "test")}


def judge_settings(cfg: DictConfig) -> JudgeSettings:
    return JudgeSettings(**OmegaConf.to_container(cfg.judge, resolve=True))


def pairs_of(
    cfg: DictConfig, run: RunDir, source: DictConfig, splits: dict[str, list[Entry]]
) -> tuple[list[dict[str, str]], dict[str, dict[str, int]]]:
    """The train and val pairs by `cfg.pairs`, and their outcome counts."""
    folder, trained = run.preferences_dir, {k: splits[k] for k in ("train", "val")}
    if cfg.pairs == "rewrite":
        pairs, counts = [], {}
        with Judge(judge_settings(cfg)) as judge:
            for split, entries in trained.items():
                split_pairs, counts[split] = rewrite_pairs(
                    entries, judge, folder / f"{split}-rewrites.jsonl", split
                )
                pairs += split_pairs
        return pairs, counts
    model = load_model(model_config(source), run.trained_weights(), device_of(cfg.device))
    options = SamplingOptions(
        n=cfg.n,
        temperature=cfg.temperature,
        top_k=cfg.top_k,
        seed=cfg.seed,
        max_new_tokens=cfg.max_new_tokens,
        batch_size=cfg.batch_size,
        prepack_weights=cfg.prepack_weights,
    )
    rule = PairRule(right_score=cfg.right_score, use_reference=cfg.use_reference)
    style = prompt_style(source.prompt.name)
    if cfg.scorer == "exact_match":
        return sampled_pairs(model, trained, style, folder, options, rule)
    with Judge(judge_settings(cfg)) as judge:
        return sampled_pairs(model, trained, style, folder, options, rule, judge)


def make_preferences(cfg: DictConfig) -> dict[str, Any]:
    """Writes `<run_dir>/preferences.json` and `<run_dir>/preferences/summary.json`; the summary."""
    if cfg.pairs not in PAIRS or cfg.scorer not in SCORERS:
        raise InvalidInput(
            f"pairs={cfg.pairs}, scorer={cfg.scorer}: choose pairs from {', '.join(PAIRS)} "
            f"and scorer from {', '.join(SCORERS)}"
        )
    run = RunDir(cfg.run_dir)
    source, splits = run_splits(run, cfg)
    began = time.perf_counter()
    pairs, counts = pairs_of(cfg, run, source, splits)
    for split in ("train", "val"):
        if not any(p["split"] == split for p in pairs):
            raise InvalidInput(
                f"no {split} pairs from {run.path} ({format_counts(counts)}); sample more "
                "answers (n=, temperature=) or more prompts (limit=, val_limit=)"
            )
    write_json_atomic(run.preferences, pairs + evaluation_entries(splits["test"]))
    summary = {
        "pairs": cfg.pairs,
        "scorer": cfg.scorer if cfg.pairs == "sample" else None,
        "pair_counts": {split: sum(p["split"] == split for p in pairs) for split in counts},
        "outcomes": counts,
        "test_entries": len(splits["test"]),
        "seconds": time.perf_counter() - began,
        "options": OmegaConf.to_container(cfg, resolve=True),
    }
    write_json_atomic(run.preferences_dir / "summary.json", summary)
    print(format_counts(counts))
    log.info("wrote %s (%.0f s)", run.preferences, summary["seconds"])
    return summary


@one_line_user_errors
def task(cfg: DictConfig) -> None:
    """The command's task: writes the pairs. A user's mistake is one line."""
    make_preferences(cfg)


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="preferences")
def main(cfg: DictConfig) -> None:
    """Hydra entry point of `python -m lit_sft.preferences`."""
    task(cfg)
