"""`python evaluate.py ...`: answer a run's test split and score the answers."""

from __future__ import annotations

import logging
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from lit_sft.checkpoints import load_model
from lit_sft.cli.loggers import build_loggers
from lit_sft.cli.sources import device_of, model_config, source_config, weights_path
from lit_sft.errors import InvalidInput, exit_if_user_error
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

log = logging.getLogger(__name__)


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


def task(cfg: DictConfig) -> float | None:
    """`evaluate.py`'s task: evaluates; returns the mean score. A user's mistake is one line."""
    try:
        return evaluate(cfg)["mean"]
    except Exception as error:
        exit_if_user_error(error)
        raise
