"""Serve a trained model over OpenAI's API: `python serve.py run_dir=outputs/...` (see README)."""

import hydra
from omegaconf import DictConfig

from lit_sft.cli.errors import run_cli
from lit_sft.cli.serve import task


@hydra.main(version_base="1.3", config_path="conf", config_name="serve")
def main(cfg: DictConfig) -> None:
    """Serves until interrupted."""
    task(cfg)


if __name__ == "__main__":
    run_cli(main)
