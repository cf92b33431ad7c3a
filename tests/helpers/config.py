"""The project's real Hydra config, composed the way the entry points compose it, and tiny runs."""

from __future__ import annotations

import os
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf, open_dict
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import lit_sft.cli  # noqa: F401  (registers ${run_path:...}, as the entry points do)

REPO = Path(__file__).resolve().parents[2]
# LIT_SFT_SHARED: where the book data lives when the tests run from a copy (mutmut's mutants/).
SHARED = Path(os.environ.get("LIT_SFT_SHARED", REPO.parent / "shared"))
BOOK_DATA = SHARED / "data" / "instruction-data.json"

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
    "callbacks.sample_answer.max_new_tokens=4",
    "callbacks.sample_answer.every_n_validations=1",
]


def compose_config(
    overrides: list[str], run_dir: Path | None = None, config_name: str = "config"
) -> DictConfig:
    """The project's real config `config_name` with `overrides`, writing into `run_dir`."""
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=overrides)
    if run_dir is not None:
        with open_dict(cfg):
            cfg.run_dir = str(run_dir)
    return cfg


def save_run_config(cfg: DictConfig, run_dir: Path) -> DictConfig:
    """Writes `cfg` where Hydra leaves a run's config, `<run_dir>/.hydra/config.yaml`; `cfg`."""
    (run_dir / ".hydra").mkdir(parents=True)
    OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")
    return cfg


def scalars(run_dir: Path, tag: str) -> list[tuple[int, float]]:
    """(step, value) of a scalar in a run's TensorBoard events."""
    events = EventAccumulator(str(run_dir / "tb"))
    events.Reload()
    return [(e.step, e.value) for e in events.Scalars(tag)]
