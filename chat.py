"""Talk to a trained model: `python chat.py run_dir=outputs/...` (see README)."""

import hydra
from omegaconf import DictConfig

from lit_sft.cli.chat import task
from lit_sft.cli.errors import run_cli


@hydra.main(version_base="1.3", config_path="conf", config_name="chat")
def main(cfg: DictConfig) -> None:
    """Answers `message=` once, or chats on stdin/stdout."""
    task(cfg)


if __name__ == "__main__":
    run_cli(main)
