"""`python evaluate.py ...`: answer a run's test split (or read answers made elsewhere), score them,
and write a summary that says what produced it, each result in its own keyed folder."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from lit_sft.checkpoints import load_model
from lit_sft.cli.errors import one_line_user_errors
from lit_sft.cli.loggers import build_loggers
from lit_sft.cli.sources import device_of, model_config, source_config, weights_path
from lit_sft.errors import InvalidInput
from lit_sft.evaluation.answers import generate_responses, read_answers_file, rebuild_test_split
from lit_sft.evaluation.flags import flag_summary, format_flags
from lit_sft.evaluation.judge import Judge, JudgeSettings, JudgeUnavailable
from lit_sft.evaluation.keys import (
    GenerationSettings,
    answers_name,
    answers_settings,
    file_answers_settings,
    scorer_name,
    weights_hash,
)
from lit_sft.evaluation.results import claim, write_scores
from lit_sft.evaluation.scoring import (
    SCORERS,
    Scores,
    exact_match_scores,
    judge_repeats,
    mean_of_repeats,
    self_consistency,
)
from lit_sft.evaluation.summary import format_summary, summarize, summary_scalars
from lit_sft.files import write_json_atomic
from lit_sft.loggers import log_scalars
from lit_sft.prompts import prompt_style
from lit_sft.run_dir import AnswersDir, EvalDir, RunDir, ScoresDir, read_json

log = logging.getLogger(__name__)


@dataclass
class Answers:
    """The answers to score, where they are kept, and what made them."""

    folder: AnswersDir
    settings: dict[str, Any]
    entries: list[dict[str, Any]]
    generation: dict[str, Any] | None = None  # the settings answers were generated with
    stats: dict[str, float] | None = None  # what this invocation generated, and how fast
    run: DictConfig | None = None  # the run's own config, when answering a training run


def model_answers(cfg: DictConfig, eval_dir: EvalDir) -> Answers:
    """The test split answered by the run's (or `weights=`) model, kept by their settings."""
    source, is_run = source_config(cfg)
    weights = weights_path(cfg, source, is_run)
    if weights is None:
        log.warning("no weights given: evaluating a randomly initialised model")
    model = load_model(model_config(source), weights, device_of(cfg.device))
    split = rebuild_test_split(instantiate(source.data))
    gen = GenerationSettings(
        cfg.max_new_tokens, cfg.temperature, cfg.top_k, cfg.seed, cfg.batch_size
    )
    settings = answers_settings(weights_hash(model), source.prompt.name, split, gen)
    folder = eval_dir.answers(answers_name(settings, gen))
    claim(folder.settings, settings)
    log.info(
        "answers of %s (first %s test entries) in %s", weights, cfg.limit or "all", folder.path
    )
    entries, stats = generate_responses(
        model,
        split,
        prompt_style(source.prompt.name),
        folder.answers,
        limit=cfg.limit,
        prepack_weights=cfg.prepack_weights,
        **asdict(gen),
    )
    log.info("%d answers made now, %d found there", stats.answers, len(entries) - stats.answers)
    generation = {**asdict(gen), "weights": str(weights) if weights else None}
    return Answers(
        folder, settings, entries, generation, stats.as_dict(), source if is_run else None
    )


def file_answers(cfg: DictConfig, eval_dir: EvalDir) -> Answers:
    """Answers made elsewhere (`answers=<file>`, `response_field=<key>`), kept by their content."""
    path = Path(cfg.answers)
    entries = read_answers_file(path, cfg.response_field)
    settings = file_answers_settings(path.name, cfg.response_field, entries)
    folder = eval_dir.answers(answers_name(settings))
    claim(folder.settings, settings)
    if not folder.answers.is_file():
        write_json_atomic(folder.answers, entries)
    return Answers(folder, settings, entries[: cfg.limit])


def judge_settings(cfg: DictConfig) -> JudgeSettings:
    """The judge the config names (conf/judge/*.yaml and judge.* overrides)."""
    return JudgeSettings(**OmegaConf.to_container(cfg.judge, resolve=True))


def score(
    cfg: DictConfig, answers: Answers
) -> tuple[ScoresDir, dict[str, Any], Scores, list[Scores]]:
    """The scorer's folder and settings, each entry's score, and the scores per repeat."""
    if cfg.scorer == "exact_match":
        settings: dict[str, Any] = {"scorer": "exact_match"}
        folder = answers.folder.scores(scorer_name(settings))
        claim(folder.settings, settings)
        scores = exact_match_scores(answers.entries)
        write_scores(folder.scores, scores)
        return folder, settings, list(scores), [list(scores)]
    with Judge(judge_settings(cfg)) as judge:
        settings = judge.settings.key()  # with the server's address resolved
        folder = answers.folder.scores(scorer_name(settings))
        claim(folder.settings, settings)
        try:
            per_repeat = judge_repeats(answers.entries, judge, folder.scores)
        except JudgeUnavailable as error:
            raise JudgeUnavailable(
                f"{error}; the answers are kept in {answers.folder.answers}: run again to score "
                "them"
            ) from None
        settings = {**settings, "repeats": judge.settings.repeats}
    return folder, settings, mean_of_repeats(per_repeat), per_repeat


def log_to_run(answers: Answers, summary: dict[str, Any], run_dir: RunDir) -> None:
    """The scores into the run's own loggers, at its last training step (beside its val/loss)."""
    if answers.run is None:
        return
    loggers = build_loggers(answers.run.get("logger"), read_json(run_dir.loggers))
    step = run_dir.read_summary().get("steps", 0)
    log_scalars(list(loggers.values()), summary_scalars(summary), step)


def check_options(cfg: DictConfig) -> None:
    """Raise InvalidInput for a scorer or limit that cannot be used."""
    if cfg.scorer not in SCORERS:
        raise InvalidInput(
            f"unknown scorer {cfg.scorer!r}, in scorer=; choose one of {', '.join(SCORERS)}"
        )
    if cfg.limit is not None and cfg.limit < 1:
        raise InvalidInput(f"limit={cfg.limit} answers nothing; give a positive count or null")


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Answers and scores `cfg.run_dir`'s test split (or `answers=`); returns the summary."""
    check_options(cfg)
    started, began = datetime.now(timezone.utc), time.perf_counter()
    run_dir, eval_dir = RunDir(cfg.run_dir), EvalDir(Path(cfg.out) / "eval")
    if eval_dir.legacy_answers.is_file():
        log.info("%s predates keyed results: kept, not reused", eval_dir.legacy_answers)
    answers = file_answers(cfg, eval_dir) if cfg.answers else model_answers(cfg, eval_dir)
    answered = time.perf_counter()
    folder, scorer, scores, per_repeat = score(cfg, answers)
    val_loss = run_dir.read_summary().get("val_loss") if answers.run is not None else None
    summary = {
        "result": f"{answers.folder.path.name}/{folder.path.name}",
        "scorer": scorer,
        "answers": answers.settings,
        "generation": answers.generation,
        "limit": cfg.limit,
        **summarize(cfg.scorer, scores, val_loss),
        "self_consistency": self_consistency(per_repeat),
        "flags": flag_summary(
            [e for e in answers.entries if e], (answers.generation or {}).get("max_new_tokens")
        ),
        "timing": {
            "started_at": started.isoformat(timespec="seconds"),
            "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "seconds": time.perf_counter() - began,
            "answering_seconds": answered - began,
            "scoring_seconds": time.perf_counter() - answered,
            # Only the answers this invocation made: a resumed evaluation times its own part.
            "generated": answers.stats,
        },
        "paths": {"answers": str(answers.folder.answers), "scores": str(folder.scores)},
    }
    write_json_atomic(folder.summary, summary)
    log_to_run(answers, summary, run_dir)
    print(format_summary(summary))
    print(f"flags     {format_flags(summary['flags'])}")
    print(f"summary   {folder.summary}")
    return summary


@one_line_user_errors
def task(cfg: DictConfig) -> float | None:
    """`evaluate.py`'s task: evaluates; returns the mean score. A user's mistake is one line."""
    return evaluate(cfg)["mean"]
