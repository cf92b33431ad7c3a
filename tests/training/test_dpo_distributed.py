"""DPO under DDP: two gloo processes on the CPU give the single-process losses, per reference."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from lit_sft.model import GPT, GPTConfig
from tests.helpers.config import TINY_RUN, scalars
from tests.helpers.scripts import run_script

ARCH = {"vocab_size": 50257, "context_length": 256, "emb_dim": 32, "n_layers": 2, "n_heads": 2}
RUN = [
    *(o if o != "data=synthetic" else "data=preference" for o in TINY_RUN),
    "method=dpo",
    "data.path=null",
    "data.synthetic_size=120",  # 6 validation pairs: whole batches on one process and on two
    "data.shuffle=false",
    "module.lr=3e-3",
    "trainer.max_steps=4",
    "trainer.val_check_interval=2",
    "trainer.accelerator=cpu",
    "hydra.job.chdir=false",
]


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("sft") / "model.safetensors"
    save_file(GPT(GPTConfig(**ARCH)).state_dict(), path)
    return path


def run_train(run_dir: Path, *overrides: str) -> None:
    result = run_script("train.py", *RUN, *overrides, f"hydra.run.dir={run_dir}", timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.slow
@pytest.mark.parametrize(
    "reference",
    [
        ["dpo.precompute_reference=false"],  # a frozen copy of the policy
        ["adapter=lora", "adapter.rank=4", "adapter.dropout=0.0"],  # the adapters switched off
        ["dpo.precompute_reference=true"],  # log-probabilities computed once
        ["dpo.loss=simpo", "dpo.beta=2.0", "dpo.sft_weight=0.5"],  # no reference at all
    ],
    ids=["frozen-copy", "lora", "precomputed", "simpo"],
)
def test_two_process_dpo_follows_the_single_process_losses(
    tmp_path: Path, weights: Path, reference: list[str]
) -> None:
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    common = [f"model.weights={weights}", *reference]
    run_train(single, *common, "data.batch_size=4")
    run_train(ddp, *common, "trainer=ddp", "trainer.devices=2", "data.batch_size=2")
    # Losses and rewards within 1e-5; log-probabilities are sums over answers (~40 here), where
    # float32 sums in another order differ in the 7th digit.
    tolerances = {"train/loss": 1e-5, "val/loss": 1e-5, "train/rewards/margin": 1e-5}
    for tag in (*tolerances, "train/logps/chosen"):
        one = [value for _, value in scalars(single, tag)]
        two = [value for _, value in scalars(ddp, tag)]
        assert len(one) == len(two) >= 2, tag
        assert one == pytest.approx(two, abs=tolerances.get(tag, 0), rel=1e-6), tag
    losses = [value for _, value in scalars(single, "train/loss")]
    assert losses[-1] != losses[0]  # it trains
