"""Answer a run's test split and score the answers: `python evaluate.py run_dir=outputs/...`."""

import hydra
from omegaconf import DictConfig

from lit_sft.cli.errors import run_cli
from lit_sft.cli.evaluate import task


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
def main(cfg: DictConfig) -> float | None:
    """Answers and scores; returns the mean score."""
    return task(cfg)


if __name__ == "__main__":
    run_cli(main)
