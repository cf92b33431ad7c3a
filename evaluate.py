"""Answer a run's test split and score the answers: `python evaluate.py run_dir=outputs/...`."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from lit_sft.checkpoints import load_model, resolve_weights
from lit_sft.errors import InvalidInput, exit_if_user_error, run_cli
from lit_sft.evaluation.answers import generate_responses, rebuild_test_split
from lit_sft.evaluation.judge import Judge, JudgeSettings, JudgeUnavailable
from lit_sft.evaluation.scoring import (
    SCORERS,
    exact_match_scores,
    format_summary,
    judge_scores,
    summarize,
    summary_scalars,
)
from lit_sft.files import write_json_atomic
from lit_sft.loggers import log_scalars
from lit_sft.prompts import prompt_style
from lit_sft.run_dir import RunDir, read_json
from train import build_loggers

log = logging.getLogger(__name__)


def source_config(cfg: DictConfig) -> tuple[DictConfig, bool]:
    """The config naming model, prompt and data (the run's own if `run_dir` is a run), and is it."""
    run_dir = RunDir(cfg.run_dir)
    if run_dir.is_run():
        given = [group for group in ("model", "prompt") if cfg.get(group) is not None]
        if given:
            raise InvalidInput(
                f"{run_dir.path} is a training run and brings its own model and prompt; drop "
                f"{', '.join(given)}=, or evaluate weights=<file> without run_dir"
            )
        source = OmegaConf.load(run_dir.config)
        # The saved run_dir is Hydra's output folder of the training job; here it is this folder.
        source.run_dir = str(run_dir.path)
        return source, True
    if cfg.get("model") is None or cfg.get("prompt") is None:
        raise InvalidInput(
            f"{run_dir.path} is not a training run (no .hydra/config.yaml): "
            "pass run_dir=<run folder>, or weights=<file> model=<size> prompt=<style> [data=...]"
        )
    return cfg, False


def weights_path(cfg: DictConfig, source: DictConfig, is_run: bool) -> Path | None:
    """`weights=` if given, else the run's weights, else what the model config names."""
    weights = cfg.weights
    if weights is None:
        weights = str(RunDir(cfg.run_dir).trained_weights()) if is_run else source.model.weights
    return resolve_weights(
        weights,
        source.model.hub_repo,
        revision=source.model.get("revision"),  # runs written before it existed lack it
        cache_dir=cfg.hub.cache_dir,
        endpoint=cfg.hub.endpoint,
    )


def model_config(source: DictConfig) -> dict[str, Any]:
    """The GPT architecture `source` (a run's config, or this one) names."""
    # Run folders written before `arch` carried it keep tie_weights beside `arch`.
    return {
        "tie_weights": source.model.tie_weights,
        **OmegaConf.to_container(source.model.arch, resolve=True),
    }


def device_of(device: str) -> str:
    """`device`, with auto meaning cuda if available, else cpu."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def scores_of(
    cfg: DictConfig, responses: list[dict[str, Any]], run_dir: RunDir
) -> list[float] | list[float | None]:
    """Each answer's score by `cfg.scorer`; None where the judge failed."""
    if cfg.scorer == "exact_match":
        return exact_match_scores(responses)
    settings = JudgeSettings(**OmegaConf.to_container(cfg.judge, resolve=True))
    try:
        with Judge(settings) as judge:
            return judge_scores(responses, judge, run_dir.scores)
    except JudgeUnavailable as error:
        raise JudgeUnavailable(
            f"{error}; the answers are kept in {run_dir.answers}: run again to score them"
        ) from None


def log_to_run(source: DictConfig, is_run: bool, summary: dict[str, Any], run_dir: RunDir) -> None:
    """The scores into the run's own loggers, at its last training step (beside its val/loss)."""
    if not is_run:
        return
    loggers = build_loggers(source.get("logger"), read_json(run_dir.loggers))
    step = run_dir.read_summary().get("steps", 0)
    log_scalars(list(loggers.values()), summary_scalars(summary), step)


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Answers and scores the test split of `cfg.run_dir` (or `weights=`); returns the summary."""
    if cfg.scorer not in SCORERS:
        raise InvalidInput(
            f"unknown scorer {cfg.scorer!r}, in scorer=; choose one of {', '.join(SCORERS)}"
        )
    run_dir = RunDir(cfg.run_dir)
    source, is_run = source_config(cfg)
    weights = weights_path(cfg, source, is_run)
    if weights is None:
        log.warning("no weights given: evaluating a randomly initialised model")
    model = load_model(model_config(source), weights, device_of(cfg.device))
    entries = rebuild_test_split(instantiate(source.data))[: cfg.limit]
    log.info("answering %d test entries with %s into %s", len(entries), weights, run_dir.eval_dir)
    responses, generation = generate_responses(
        model,
        entries,
        prompt_style(source.prompt.name),
        run_dir.answers,
        batch_size=cfg.batch_size,
        max_new_tokens=cfg.max_new_tokens,
        temperature=cfg.temperature,
        top_k=cfg.top_k,
        seed=cfg.seed,
        prepack_weights=cfg.prepack_weights,
    )
    scores = scores_of(cfg, responses, run_dir)
    run_summary = run_dir.read_summary()
    summary = summarize(cfg.scorer, scores, run_summary.get("val_loss"))
    # Only the answers this invocation made: a resumed evaluation times its own part.
    summary["generation"] = generation.as_dict()
    write_json_atomic(run_dir.eval_summary, summary)
    log_to_run(source, is_run, summary, run_dir)
    print(format_summary(summary))
    return summary


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
def main(cfg: DictConfig) -> float | None:
    """Hydra entry point; returns the mean score."""
    try:
        return evaluate(cfg)["mean"]
    except Exception as error:
        exit_if_user_error(error)
        raise


if __name__ == "__main__":
    run_cli(main)
