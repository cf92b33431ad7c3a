"""Shared fixtures: the offline tokenizer and the real Hydra config, composed and shrunk."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
BOOK_DATA = SHARED / "data" / "instruction-data.json"

if "TIKTOKEN_CACHE_DIR" not in os.environ and (SHARED / "tiktoken-cache").is_dir():
    os.environ["TIKTOKEN_CACHE_DIR"] = str(SHARED / "tiktoken-cache")

# Tiny models gain nothing from a second thread, and two spinning OpenMP threads on a busy 2-core
# machine slow each step by an order of magnitude.
torch.set_num_threads(1)

TINY_RUN = [
    "model=gpt2-tiny",
    # Narrower than gpt2-tiny: checkpoints and steps of the 50257-row embedding dominate test time.
    "model.arch.emb_dim=32",
    "model.arch.n_heads=2",
    "model.arch.n_layers=2",
    "data=synthetic",
    "data.synthetic_size=200",
    "trainer.max_steps=4",
    "trainer.val_check_interval=2",
    "trainer.limit_val_batches=2",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "module.sample_max_new_tokens=4",
]


def compose_config(overrides: list[str], run_dir: Path) -> DictConfig:
    """The project's real config with `overrides`, writing into `run_dir`."""
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    with open_dict(cfg):
        cfg.run_dir = str(run_dir)
    return cfg


@pytest.fixture
def tiny_config(tmp_path: Path) -> Callable[..., DictConfig]:
    """Composes a tiny offline run into tmp_path, with extra overrides."""

    def make(*overrides: str, run_dir: Path | None = None) -> DictConfig:
        return compose_config([*TINY_RUN, *overrides], run_dir or tmp_path / "run")

    return make


@pytest.fixture(scope="session")
def book_data() -> Path:
    if not BOOK_DATA.is_file():
        pytest.skip(f"{BOOK_DATA} is not there")
    return BOOK_DATA
