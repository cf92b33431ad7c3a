"""Instruction-finetune GPT-2: `python train.py model=gpt2-medium prompt=phi3` (see README)."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from lit_sft.checkpoints import export_hf, load_weights, resolve_weights
from lit_sft.data.sft import InstructionDataModule
from lit_sft.lora import LoRAConfig, add_adapters, merge_adapters
from lit_sft.training.callbacks import RunSummary
from lit_sft.training.sft import InstructionModule

log = logging.getLogger(__name__)


def run_hparams(cfg: DictConfig) -> dict[str, Any]:
    """The values a sweep compares runs by, for summary.json and TensorBoard's HParams view."""
    return {
        "model": cfg.model.name,
        "prompt": cfg.prompt.name,
        "mask_instructions": cfg.data.mask_instructions,
        "weights": cfg.model.weights,
        "adapter": cfg.adapter.name,
        "lr": cfg.module.lr,
        "batch_size": cfg.data.batch_size,
        "seed": cfg.seed,
    }


def lora_config(cfg: DictConfig) -> LoRAConfig | None:
    """The LoRA settings of `adapter=lora`; None for full finetuning (`adapter=none`)."""
    settings = OmegaConf.to_container(cfg.adapter, resolve=True)
    name = settings.pop("name")
    if name not in ("none", "lora"):
        raise ValueError(f"adapter.name={name!r}: expected none or lora")
    return LoRAConfig(**settings) if name == "lora" else None


def build_module(cfg: DictConfig) -> InstructionModule:
    """The LightningModule: given or pretrained weights loaded, LoRA adapters added if asked."""
    model_config = OmegaConf.to_container(cfg.model.arch, resolve=True)
    module = instantiate(cfg.module, model_config=model_config, _convert_="all")
    weights = resolve_weights(
        cfg.model.weights,
        cfg.model.hub_repo,
        cache_dir=cfg.hub.cache_dir,
        base_url=cfg.hub.base_url,
    )
    if weights is not None:
        load_weights(module.model, weights)
        log.info("loaded weights from %s", weights)
        module.base_weights = str(weights)
    if (lora := lora_config(cfg)) is not None:
        add_adapters(module.model, lora)
    return module


def train(cfg: DictConfig) -> dict[str, Any]:
    """Trains one run into `cfg.run_dir` and returns its summary."""
    L.seed_everything(cfg.seed, workers=True)
    run_dir = Path(cfg.run_dir)
    datamodule: InstructionDataModule = instantiate(cfg.data)
    module = build_module(cfg)
    summary = RunSummary(run_dir, run_hparams(cfg))
    callbacks = [instantiate(c) for c in cfg.callbacks.values() if c is not None] + [summary]
    trainer: L.Trainer = instantiate(
        cfg.trainer, logger=instantiate(cfg.logger), callbacks=callbacks, default_root_dir=run_dir
    )
    if cfg.ckpt_path is None:
        # The book's curves start with the untrained model's losses; so do ours (step 0).
        trainer.validate(module, datamodule=datamodule, verbose=False)
    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.ckpt_path)
    if cfg.export_weights and trainer.is_global_zero:
        # LoRA adapters are folded into the weights: the export is a plain GPT-2.
        export_hf(merge_adapters(module.model), run_dir)
    return summary.result


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    """Hydra entry point; returns the final validation loss (for sweepers that optimise it)."""
    # The post-step weights are the ones a resumed run must continue from, as intended here.
    warnings.filterwarnings("ignore", message="Using ModelCheckpoint with manual optimization")
    return train(cfg).get("val_loss", float("nan"))


if __name__ == "__main__":
    main()
