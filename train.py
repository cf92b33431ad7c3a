"""Instruction-finetune GPT-2: `python train.py model=gpt2-medium prompt=phi3` (see README)."""

import hydra
from omegaconf import DictConfig

from lit_sft.cli.errors import run_cli
from lit_sft.cli.train import task


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    """Trains one run; returns its final validation loss (for sweepers that optimise it)."""
    return task(cfg)


if __name__ == "__main__":
    run_cli(main)
