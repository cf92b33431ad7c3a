"""`python train.py ...`: a composed config turned into a DataModule, a LightningModule, a Trainer
and a run folder."""

from __future__ import annotations

import logging
import math
import sys
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from lit_sft.allocator import keep_freed_memory
from lit_sft.checkpoints import load_weights, resolve_weights
from lit_sft.cli.loggers import build_loggers
from lit_sft.data.check import data_check_line
from lit_sft.errors import InvalidInput, debugging, exit_if_user_error, one_line, user_error_in
from lit_sft.export import export_for_serving
from lit_sft.files import write_json_atomic
from lit_sft.loggers import finish, reopen_arguments
from lit_sft.lora import LoRAConfig, add_adapters, merge_adapters
from lit_sft.prompts import prompt_style
from lit_sft.run_dir import RunDir
from lit_sft.training.callbacks import RunSummary, failure_summary
from lit_sft.training.console import closing_line, header_line, quiet_lightning, weights_source
from lit_sft.training.fit import fit, resume_path
from lit_sft.training.strategies import default_precision

log = logging.getLogger(__name__)

# Lightning's Trainer refuses these under manual optimization; lit_sft's modules apply them with
# exact token weighting, so they go to the module instead (`optimization_options`).
TRAINER_OPTIMIZATION_KEYS = (
    "gradient_clip_val",
    "gradient_clip_algorithm",
    "accumulate_grad_batches",
)


def run_hparams(cfg: DictConfig) -> dict[str, Any]:
    """The values a sweep compares runs by, for summary.json and the loggers' hparams."""
    return {
        "model": cfg.model.name,
        "prompt": cfg.prompt.name,
        # Preference data always masks its prompts.
        "mask_instructions": cfg.data.get("mask_instructions", True),
        "weights": cfg.model.weights,
        "adapter": cfg.adapter.name,
        "lr": cfg.module.lr,
        "batch_size": cfg.data.batch_size,
        "seed": cfg.seed,
        **{f"dpo_{key}": value for key, value in cfg.get("dpo", {}).items()},
    }


def lora_config(cfg: DictConfig) -> LoRAConfig | None:
    """The LoRA settings of `adapter=lora`; None for full finetuning (`adapter=none`)."""
    settings = OmegaConf.to_container(cfg.adapter, resolve=True)
    name = settings.pop("name")
    if name not in ("none", "lora"):
        raise InvalidInput(f"adapter.name={name!r}: expected none or lora")
    return LoRAConfig(**settings) if name == "lora" else None


def optimization_options(cfg: DictConfig) -> dict[str, Any]:
    """The module arguments that `trainer.gradient_clip_val`, `trainer.gradient_clip_algorithm`
    and `trainer.accumulate_grad_batches` set (the `module.*` spellings stay as they are)."""
    trainer = cfg.trainer
    options: dict[str, Any] = {}
    clip = trainer.get("gradient_clip_val")
    if clip is not None:
        given = cfg.module.get("grad_clip")
        if given is not None and given != clip:
            raise InvalidInput(
                f"trainer.gradient_clip_val={clip} and module.grad_clip={given} disagree; "
                "pass one of them"
            )
        options["grad_clip"] = clip
    if trainer.get("gradient_clip_algorithm") not in (None, "norm"):
        options["gradient_clip_algorithm"] = trainer.gradient_clip_algorithm
    if trainer.get("accumulate_grad_batches") not in (None, 1):
        options["accumulate_grad_batches"] = trainer.accumulate_grad_batches
    return options


def build_module(cfg: DictConfig) -> tuple[L.LightningModule, Path | None]:
    """The LightningModule (given or pretrained weights loaded, LoRA adapters added if asked),
    and the weights file."""
    model_config = OmegaConf.to_container(cfg.model.arch, resolve=True)
    module = instantiate(
        cfg.module, model_config=model_config, **optimization_options(cfg), _convert_="all"
    )
    weights = resolve_weights(
        cfg.model.weights,
        cfg.model.hub_repo,
        revision=cfg.model.revision,
        cache_dir=cfg.hub.cache_dir,
        endpoint=cfg.hub.endpoint,
    )
    if weights is not None:
        load_weights(module.model, weights)
        module.base_weights = str(weights)
    if (lora := lora_config(cfg)) is not None:
        add_adapters(module.model, lora)
    return module, weights


def build_trainer(cfg: DictConfig, loggers: list, callbacks: list) -> L.Trainer:
    """Lightning's Trainer of the `trainer` group, writing into the run folder."""
    handed_to_module = {key: None for key in TRAINER_OPTIMIZATION_KEYS}
    handed_to_module["accumulate_grad_batches"] = 1
    return instantiate(
        cfg.trainer,
        precision=default_precision(cfg.trainer.precision, cfg.trainer.accelerator),
        logger=loggers,
        callbacks=callbacks,
        default_root_dir=cfg.run_dir,
        **handed_to_module,
    )


def train(cfg: DictConfig) -> dict[str, Any]:
    """Trains one run into `cfg.run_dir` and returns its summary."""
    quiet_lightning()
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    # AdamW's second moments of the head rows of tokens a run never targets underflow into
    # denormal floats within a few hundred steps, and x86 CPUs compute on those ~100x slower:
    # without this a CPU run slows down several-fold as it goes (the demo did, 0.15 -> 0.8 s/step).
    torch.set_flush_denormal(True)
    if cfg.get("keep_freed_memory", True):
        keep_freed_memory()
    run_dir = Path(cfg.run_dir)
    datamodule = instantiate(cfg.data)
    # Split before the trainer does, so that a dataset too small stops before anything starts.
    datamodule.prepare_data()
    datamodule.setup("fit")
    if datamodule.data_check is not None:
        log.info(data_check_line(datamodule.data_check))
    module, weights = build_module(cfg)
    hparams = run_hparams(cfg)
    summary = RunSummary(run_dir, hparams)
    callbacks = [instantiate(c) for c in cfg.callbacks.values() if c is not None] + [summary]
    loggers = build_loggers(cfg.get("logger"))
    trainer = build_trainer(cfg, list(loggers.values()), callbacks)
    if trainer.is_global_zero:
        reopen = {name: reopen_arguments(logger) for name, logger in loggers.items()}
        write_json_atomic(RunDir(run_dir).loggers, reopen)
        write_json_atomic(RunDir(run_dir).data_check_pairs, datamodule.data_check_pairs)
        log.info(
            header_line(
                model=cfg.model.name,
                parameters=sum(p.numel() for p in module.parameters()),
                weights=weights_source(cfg.model.weights, cfg.model.hub_repo, weights),
                prompt=cfg.prompt.name,
                mask_instructions=hparams["mask_instructions"],
                split_sizes={name: len(split) for name, split in datamodule.splits.items()},
                run_dir=run_dir,
            )
        )
    try:
        result = fit(trainer, module, datamodule, summary, resume_path(cfg.ckpt_path, run_dir))
    finally:
        finish(loggers.values())
    if cfg.export_weights and trainer.is_global_zero:
        # LoRA adapters are folded into the weights: the export is a plain GPT-2.
        export_for_serving(merge_adapters(module.model), run_dir, prompt_style(cfg.prompt.name))
    if trainer.is_global_zero:
        log.info(closing_line(result, run_dir))
    return result


def task(cfg: DictConfig) -> float:
    """`train.py`'s task: trains; returns the final validation loss (for sweepers that optimise
    it). A user's mistake is one line, and in a multirun it fails only its own job."""
    # The post-step weights are the ones a resumed run must continue from, as intended here.
    warnings.filterwarnings("ignore", message="Using ModelCheckpoint with manual optimization")
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
    try:
        return train(cfg).get("val_loss", math.nan)
    except Exception as error:
        user_error = user_error_in(error)
        if user_error is None:
            raise
        run_dir = RunDir(cfg.run_dir)
        steps = run_dir.read_summary().get("steps", 0)
        write_json_atomic(
            run_dir.summary, failure_summary("failed", run_hparams(cfg), steps, user_error)
        )
        if HydraConfig.get().mode == RunMode.MULTIRUN and not debugging():
            # One job's mistake must not stop the sweep: report it, and let the others run.
            job = HydraConfig.get().job.num
            print(f"error: {one_line(user_error)} (job {job}, {run_dir.path})", file=sys.stderr)
            return math.nan
        exit_if_user_error(user_error)
        raise
