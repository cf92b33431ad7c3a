"""Documented training options, each through train.py's train() on the tiny model, each test
failing if the option were ignored."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from huggingface_hub import constants
from omegaconf import OmegaConf
from safetensors.torch import load_file, save_file
from torch._dynamo.utils import counters

from lit_sft.checkpoints import export_hf, load_weights
from lit_sft.cli.train import train
from lit_sft.model import GPT, GPTConfig
from tests.helpers.config import scalars
from tests.helpers.gpt2 import randomize
from tests.helpers.hub_server import HubServer

# lr 0: AdamW's step (decoupled weight decay included) leaves every weight as it was loaded.
FROZEN = ("module.lr=0.0", "trainer.max_steps=1", "trainer.val_check_interval=1")


def known_model(cfg) -> GPT:  # noqa: ANN001 - a composed DictConfig
    """The run's architecture with seeded values far from the run's own (seed 123) init."""
    model = GPT(GPTConfig(**OmegaConf.to_container(cfg.model.arch, resolve=True)))
    randomize(model, seed=7)
    return model


def assert_same_weights(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert actual.keys() == expected.keys()
    for name, tensor in expected.items():
        torch.testing.assert_close(actual[name], tensor, rtol=0, atol=0, msg=name)


def final_weights(cfg) -> dict[str, torch.Tensor]:  # noqa: ANN001
    """Trains `cfg`; the weights it exported, in lit_sft's naming."""
    train(cfg)
    model = GPT(GPTConfig(**OmegaConf.to_container(cfg.model.arch, resolve=True)))
    load_weights(model, Path(cfg.run_dir) / "model.safetensors")
    return model.state_dict()


def test_model_weights_file_is_what_training_starts_from(tiny_config, tmp_path: Path) -> None:
    probe = tiny_config()
    model = known_model(probe)
    path = tmp_path / "start.safetensors"
    save_file(model.state_dict(), path)

    cfg = tiny_config(*FROZEN, f"model.weights={path}")
    assert_same_weights(final_weights(cfg), model.state_dict())


@pytest.fixture
def hub() -> HubServer:
    server = HubServer().start()
    yield server
    server.stop()


def test_model_weights_pretrained_downloads_hub_repo(
    tiny_config, hub: HubServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", "/nonexistent/token")
    model = known_model(tiny_config())
    export_hf(model, tmp_path / "hf")
    hub.add_file("someone/gpt2-tiny", (tmp_path / "hf" / "model.safetensors").read_bytes())

    cfg = tiny_config(
        *FROZEN,
        "model.weights=pretrained",
        "model.hub_repo=someone/gpt2-tiny",
        f"hub.endpoint={hub.url}",
        f"hub.cache_dir={tmp_path / 'hf-cache'}",
    )
    assert_same_weights(final_weights(cfg), model.state_dict())
    assert [r.path for r in hub.requests][0] == "/someone/gpt2-tiny/resolve/main/model.safetensors"


@pytest.mark.slow  # ~2 min on 2 busy cores: Inductor compiles the blocks' C++ kernels
def test_compile_gives_the_uncompiled_losses(tiny_config, tmp_path: Path) -> None:
    steps = ("trainer.max_steps=2", "trainer.val_check_interval=2", "export_weights=false")
    eager = tiny_config(*steps, run_dir=tmp_path / "eager")
    compiled = tiny_config(*steps, "module.compile=true", run_dir=tmp_path / "compiled")
    torch._dynamo.reset()
    train(eager)
    assert counters["stats"]["unique_graphs"] == 0
    train(compiled)
    assert counters["stats"]["unique_graphs"] >= 1  # Dynamo captured the blocks
    expected = scalars(tmp_path / "eager", "train/loss")
    actual = scalars(tmp_path / "compiled", "train/loss")
    assert [step for step, _ in actual] == [0, 1]
    assert [v for _, v in actual] == pytest.approx([v for _, v in expected], abs=1e-5)


def test_bf16_mixed_keeps_fp32_weights_and_a_close_loss(tiny_config, tmp_path: Path) -> None:
    fp32 = tiny_config("trainer.max_steps=1", run_dir=tmp_path / "fp32")
    bf16 = tiny_config(
        "trainer.max_steps=1", "trainer.precision=bf16-mixed", run_dir=tmp_path / "bf16"
    )
    train(fp32)
    train(bf16)
    assert {t.dtype for t in load_file(tmp_path / "bf16" / "model.safetensors").values()} == {
        torch.float32
    }
    full = scalars(tmp_path / "fp32", "train/loss")[0][1]
    mixed = scalars(tmp_path / "bf16", "train/loss")[0][1]
    # bf16 keeps 8 bits of mantissa: the same loss to ~1 %, but not bit for bit.
    assert mixed != full
    assert mixed == pytest.approx(full, rel=0.01)


def test_early_stopping_stops_when_val_loss_does_not_improve(tiny_config) -> None:
    """lr 0: each validation loss equals the first, so patience 1 stops at the second (step 4)."""
    cfg = tiny_config(
        "callbacks=early_stopping",
        "callbacks.early_stopping.patience=1",
        "module.lr=0.0",
        "trainer.max_steps=10",
        "export_weights=false",
    )
    assert train(cfg)["steps"] == 4


def test_micro_batch_size_in_the_trainer_gives_the_whole_batch_losses(
    tiny_config, tmp_path: Path
) -> None:
    steps = ("module.lr=3e-3", "trainer.max_steps=3", "export_weights=false")
    rows = tmp_path / "rows.jsonl"
    train(tiny_config(*steps, run_dir=tmp_path / "whole"))
    micro = tiny_config(
        *steps,
        "module.micro_batch_size=2",
        "+callbacks.rows._target_=tests.helpers.callbacks.ForwardRows",
        f"+callbacks.rows.path={rows}",
        run_dir=tmp_path / "micro",
    )
    train(micro)
    # Three steps of batch 8, each as four passes of 2 rows.
    assert rows.read_text().split() == ["2"] * 12
    # Losses, not weights: Adam's first steps move a parameter whose gradient is ~0 by ±lr on
    # the sign of rounding noise, which the next steps' losses barely see.
    whole_losses = [v for _, v in scalars(tmp_path / "whole", "train/loss")]
    micro_losses = [v for _, v in scalars(tmp_path / "micro", "train/loss")]
    assert len(micro_losses) == 3
    assert micro_losses == pytest.approx(whole_losses, abs=1e-6)
