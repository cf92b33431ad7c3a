from __future__ import annotations

import itertools
import os
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from hydra.errors import InstantiationException, MissingConfigException
from hydra.utils import instantiate
from omegaconf import OmegaConf

from lit_sft.model import GPTConfig
from lit_sft.run_dir import RunDir
from tests.helpers.config import REPO, compose_config

MODELS = sorted(p.stem for p in (REPO / "conf" / "model").glob("*.yaml"))  # not base/


def test_every_model_size_is_there() -> None:
    assert MODELS == ["gpt2-large", "gpt2-medium", "gpt2-small", "gpt2-tiny", "gpt2-xl"]


@pytest.mark.parametrize(
    ("model", "prompt", "mask"), itertools.product(MODELS, ["alpaca", "phi3"], ["false", "true"])
)
def test_every_model_prompt_mask_combination_composes(tmp_path: Path, model, prompt, mask) -> None:
    cfg = compose_config(
        [f"model={model}", f"prompt={prompt}", f"data.mask_instructions={mask}"], tmp_path
    )
    OmegaConf.resolve(cfg)
    arch = GPTConfig(**cfg.model.arch)
    assert cfg.data.prompt_style == prompt
    assert cfg.data.mask_instructions is (mask == "true")
    assert cfg.data.allowed_max_length == arch.context_length
    datamodule = instantiate(cfg.data)
    assert datamodule.style.name == prompt


def test_defaults_are_the_book_recipe(tmp_path: Path) -> None:
    cfg = compose_config([], tmp_path)
    assert cfg.model.name == "gpt2-medium" and cfg.prompt.name == "alpaca"
    assert (cfg.module.lr, cfg.module.weight_decay) == (5e-5, 0.1)
    assert (cfg.trainer.max_epochs, cfg.data.batch_size) == (2, 8)
    assert (cfg.trainer.val_check_interval, cfg.trainer.limit_val_batches) == (5, 5)
    assert cfg.model.arch.drop_rate == 0.0 and cfg.model.tie_weights is False


@pytest.mark.parametrize(
    ("model", "shape"),
    [
        ("gpt2-small", (768, 12, 12)),
        ("gpt2-medium", (1024, 24, 16)),
        ("gpt2-large", (1280, 36, 20)),
        ("gpt2-xl", (1600, 48, 25)),
    ],
)
def test_sizes_are_gpt2s(tmp_path: Path, model: str, shape) -> None:
    arch = compose_config([f"model={model}"], tmp_path).model.arch
    assert (arch.emb_dim, arch.n_layers, arch.n_heads) == shape
    assert (arch.context_length, arch.vocab_size) == (1024, 50257)


@pytest.mark.parametrize("tie", [False, True])
def test_model_tie_weights_reaches_the_architecture(tmp_path: Path, tie: bool) -> None:
    cfg = compose_config([f"model.tie_weights={str(tie).lower()}"], tmp_path)
    assert GPTConfig(**OmegaConf.to_container(cfg.model.arch, resolve=True)).tie_weights is tie


def test_method_sft_is_the_default_module_and_module_default_still_names_it(
    tmp_path: Path,
) -> None:
    default = compose_config([], tmp_path)
    assert default.module._target_ == "lit_sft.training.sft.SFTModule"
    for spelling in (["method=sft"], ["module=default"], ["module=default", "module.lr=1e-4"]):
        cfg = compose_config(spelling, tmp_path)
        expected = (
            {**default.module, "lr": 1e-4} if "module.lr=1e-4" in spelling else default.module
        )
        assert cfg.module == expected, spelling


def test_run_folder_paths_in_the_config_are_the_run_dirs(tmp_path: Path) -> None:
    cfg = compose_config(["callbacks=best"], tmp_path / "run")
    OmegaConf.resolve(cfg)
    run = RunDir(cfg.run_dir)
    assert Path(cfg.callbacks.checkpoint.dirpath) == run.checkpoints
    assert Path(cfg.callbacks.resume_checkpoint.path) == run.last_checkpoint
    assert Path(cfg.callbacks.interrupted_checkpoint.path) == run.interrupted_checkpoint
    assert Path(cfg.logger.tensorboard.save_dir) / cfg.logger.tensorboard.name == run.tb


def test_evaluate_config_shares_the_hub_block(tmp_path: Path) -> None:
    train_cfg = compose_config([], tmp_path)
    eval_cfg = compose_config([], tmp_path, config_name="evaluate")
    assert train_cfg.hub == eval_cfg.hub
    assert set(train_cfg.hub) == {"endpoint", "cache_dir"}


def test_unknown_choice_lists_the_valid_ones(tmp_path: Path) -> None:
    with pytest.raises(MissingConfigException) as error:
        compose_config(["model=gpt2-huge"], tmp_path)
    for valid in MODELS:
        assert valid in str(error.value)


def test_unknown_key_fails_loudly(tmp_path: Path) -> None:
    cfg = compose_config(["+module.learning_rate=0.1"], tmp_path)
    with pytest.raises(InstantiationException, match="unexpected keyword argument 'learning_rate'"):
        instantiate(cfg.module, model_config=dict(cfg.model.arch))


# experiment -> model, prompt, data module, synthetic data (no path), module, lr, batch size.
SFT, DPO = ("InstructionDataModule", "SFTModule"), ("PreferenceDataModule", "DPOModule")
PRESETS = {
    "demo": ("gpt2-tiny", "phi3", SFT[0], True, SFT[1], 1e-3, 16),
    "dpo_demo": ("gpt2-tiny", "phi3", DPO[0], True, DPO[1], 2e-4, 16),
    "sweep_book": ("gpt2-medium", "alpaca", SFT[0], False, SFT[1], 5e-5, 8),
    "sweep_demo": ("gpt2-tiny", "phi3", SFT[0], True, SFT[1], 1e-3, 16),
}


def test_every_experiment_preset_composes_to_its_settings(tmp_path: Path) -> None:
    assert sorted(PRESETS) == sorted(p.stem for p in (REPO / "conf" / "experiment").glob("*.yaml"))
    for preset, expected in PRESETS.items():
        cfg = compose_config([f"experiment={preset}"], tmp_path)
        actual = (
            cfg.model.name,
            cfg.prompt.name,
            cfg.data._target_.rsplit(".", 1)[1],
            cfg.data.path is None,
            cfg.module._target_.rsplit(".", 1)[1],
            cfg.module.lr,
            cfg.data.batch_size,
        )
        assert actual == expected, preset


@pytest.mark.parametrize(
    ("trainer", "strategy"),
    [("default", "auto"), ("ddp", "ddp"), ("fsdp", "lit_sft.training.strategies.fsdp_strategy")],
)
def test_trainer_presets_compose(tmp_path: Path, trainer: str, strategy: str) -> None:
    cfg = compose_config([f"trainer={trainer}"], tmp_path).trainer
    chosen = cfg.strategy if isinstance(cfg.strategy, str) else cfg.strategy._target_
    assert (chosen, cfg.devices) == (strategy, 1 if trainer == "default" else 2)


def test_slurm_launcher_config_resolves_against_the_trainer(tmp_path: Path) -> None:
    from hydra import compose, initialize_config_dir
    from hydra.utils import get_class

    overrides = ["hydra/launcher=slurm", "trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2"]
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides, return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert (launcher.gpus_per_node, launcher.tasks_per_node, launcher.nodes) == (4, 4, 2)
    assert get_class(launcher._target_).__name__ == "SlurmLauncher"


def test_method_dpo_takes_the_book_defaults_and_dpo_overrides(tmp_path: Path) -> None:
    cfg = compose_config(["method=dpo", "data=preference", "dpo.beta=0.2", "dpo.logp=mean"])
    module = OmegaConf.to_container(cfg.module, resolve=True)
    assert module["_target_"] == "lit_sft.training.dpo.DPOModule"
    assert (module["lr"], module["weight_decay"], cfg.data.batch_size) == (5e-6, 0.01, 8)
    assert (module["beta"], module["logp"], module["label_smoothing"]) == (0.2, "mean", 0.0)
    assert module["precompute_reference"] is False
    assert cfg.data.path.endswith(
        "04_preference-tuning-with-dpo/instruction-data-with-preference.json"
    )


@pytest.mark.slow  # ~40 s: three tiny runs, each in its own process
def test_default_run_and_multirun_folder_names(tmp_path: Path) -> None:
    """`outputs/<date>/<time>_<model>_<prompt>` and `multirun/<date>/<time>/<num>_<overrides>`,
    from train.py run in an empty working directory."""
    tiny = ["model=gpt2-tiny", "data=synthetic", "trainer.max_steps=1", "export_weights=false"]
    started = datetime.now()
    for arguments in ([*tiny, "prompt=phi3"], ["-m", *tiny, "module.lr=0.001,0.002"]):
        command = [sys.executable, str(REPO / "train.py"), *arguments]
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr[-3000:]

    def stamp(date: Path, time: str) -> datetime:
        return datetime.strptime(f"{date.name} {time}", "%Y-%m-%d %H-%M-%S")

    [run] = (tmp_path / "outputs").glob("*/*")
    assert run.name.endswith("_gpt2-tiny_phi3") and (run / "summary.json").is_file()
    [sweep] = (tmp_path / "multirun").glob("*/*")
    # Hydra sorts the overrides; `-` and `+` so that a folder name is a valid Hydra value.
    overrides = "+".join(
        ["data-synthetic", "export_weights-False", "model-gpt2-tiny", "module.lr-{}"]
        + ["trainer.max_steps-1"]
    )
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == [
        f"0_{overrides.format('0.001')}",
        f"1_{overrides.format('0.002')}",
    ]
    assert all((job / "summary.json").is_file() for job in sweep.iterdir() if job.is_dir())
    for when in (stamp(run.parent, run.name.split("_")[0]), stamp(sweep.parent, sweep.name)):
        assert started - timedelta(seconds=1) <= when <= datetime.now()


def test_the_preference_demo_preset_is_orpo_without_a_reference(tmp_path: Path) -> None:
    # README's measured loop: ORPO kept the chosen answers up where plain DPO collapsed them.
    cfg = compose_config(["experiment=dpo_demo", "model.weights=w.safetensors"], tmp_path)
    assert (cfg.module.loss, cfg.module.orpo_lambda, cfg.module.sft_weight) == ("orpo", 0.1, 0.0)
    assert (cfg.trainer.max_steps, cfg.module.lr) == (200, 2e-4)
    assert (cfg.module.lr_schedule, cfg.module.warmup_steps) == ("cosine", 20)
