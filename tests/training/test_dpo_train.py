from __future__ import annotations

import json
import math
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from lit_sft.cli.train import train
from lit_sft.data.preference import PreferenceDataModule
from lit_sft.model import GPT, GPTConfig
from lit_sft.training.losses import sequence_logps
from tests.helpers.callbacks import read_batch_log
from tests.helpers.config import TINY_RUN, compose_config, scalars

ARCH = {"vocab_size": 50257, "context_length": 256, "emb_dim": 32, "n_layers": 2, "n_heads": 2}
DPO_RUN = [
    *(o if o != "data=synthetic" else "data=preference" for o in TINY_RUN),
    "method=dpo",
    "data.path=null",
    "data.synthetic_size=100",
    "data.batch_size=4",
    "module.lr=3e-3",
    "trainer.max_steps=6",
    "trainer.val_check_interval=3",
]


@pytest.fixture(scope="module")
def initial_weights(tmp_path_factory) -> Path:
    """An SFT model's weights, as method=dpo starts from (here random, fixed by a seed)."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("sft") / "model.safetensors"
    save_file(GPT(GPTConfig(**ARCH)).state_dict(), path)
    return path


def dpo_config(run_dir: Path, weights: Path, *overrides: str):
    return compose_config([*DPO_RUN, f"model.weights={weights}", *overrides], run_dir)


def test_dpo_run_starts_at_log_2_and_logs_every_metric(tmp_path: Path, initial_weights) -> None:
    batches, steps = tmp_path / "batches.jsonl", tmp_path / "steps.jsonl"
    log_batches = (
        "+callbacks.batch_log._target_=tests.helpers.callbacks.BatchLog",
        f"+callbacks.batch_log.path={batches}",
        "+callbacks.step_outputs._target_=tests.helpers.callbacks.StepOutputs",
        f"+callbacks.step_outputs.path={steps}",
    )
    summary = train(dpo_config(tmp_path, initial_weights, *log_batches))
    # Each step returns its mean pair loss; only that loss goes to the progress bar.
    train_loss = [loss for _, loss in scalars(tmp_path, "train/loss")]
    assert read_batch_log(steps) == [
        [step + 1, pytest.approx(loss, abs=1e-6), ["train/loss"]]
        for step, loss in enumerate(train_loss)
    ]
    val = scalars(tmp_path, "val/loss")
    assert [step for step, _ in val] == [0, 2, 5]
    # Step 0: the policy is its reference, so every pair's loss is log 2 and rewards are 0.
    assert val[0][1] == pytest.approx(math.log(2), abs=1e-6)
    assert scalars(tmp_path, "train/loss")[0] == (0, pytest.approx(math.log(2), abs=1e-6))
    assert [lr for _, lr in scalars(tmp_path, "train/lr")] == pytest.approx([3e-3] * 6)
    # Counted from the batches the run trained on, as a callback of the test saw them.
    tokens = [record[2] for record in read_batch_log(batches)]
    seen = [sum(tokens[: step + 1]) for step in range(6)]
    assert [value for _, value in scalars(tmp_path, "train/tokens_seen")] == seen
    assert scalars(tmp_path, "val/rewards/margin")[0][1] == pytest.approx(0.0, abs=1e-6)
    assert val[-1][1] < val[0][1] - 1e-3
    for split in ("train", "val"):
        for name in ("rewards/chosen", "rewards/rejected", "rewards/accuracy", "logps/chosen"):
            assert len(scalars(tmp_path, f"{split}/{name}")) == (6 if split == "train" else 3)
    written = json.loads((tmp_path / "summary.json").read_text())
    assert written["val_loss"] == pytest.approx(val[-1][1], rel=1e-6)
    margin = scalars(tmp_path, "val/rewards/margin")[-1][1]
    assert written["val_rewards_margin"] == summary["val_rewards_margin"] == pytest.approx(margin)
    assert written["dpo_beta"] == 0.1 and written["dpo_logp"] == "sum"


def test_precomputed_reference_equals_the_live_one(tmp_path: Path, initial_weights) -> None:
    live, pre = tmp_path / "live", tmp_path / "pre"
    train(dpo_config(live, initial_weights))
    train(dpo_config(pre, initial_weights, "dpo.precompute_reference=true"))
    table = json.loads((pre / "reference-logps.json").read_text())
    data = PreferenceDataModule(path=None, synthetic_size=100, batch_size=4, seed=123)
    data.setup()
    model = GPT(GPTConfig(**ARCH))
    model.load_state_dict(load_file(initial_weights))
    for split in ("train", "val"):
        assert len(table[split]) == len(data.encoded[split])
        for batch in data.train_dataloader() if split == "train" else data.val_dataloader():
            with torch.no_grad():
                expected = sequence_logps(model, batch["input_ids"], batch["targets"])
            stored = torch.tensor(table[split])[batch["pair_index"][0::2]].flatten()
            assert (stored - expected).abs().max() <= 1e-6 * expected.abs().max()
    for tag in ("train/loss", "val/loss", "val/rewards/margin"):
        for (_, a), (_, b) in zip(scalars(live, tag), scalars(pre, tag), strict=True):
            assert a == pytest.approx(b, abs=1e-6), tag


@pytest.mark.slow
@pytest.mark.parametrize("precompute", ["false", "true"])
def test_killed_and_resumed_dpo_run_ends_with_the_same_weights(
    tmp_path: Path, initial_weights, precompute: str
) -> None:
    whole, crashed = tmp_path / "whole", tmp_path / "crashed"
    option = f"dpo.precompute_reference={precompute}"
    every_2 = "callbacks.resume_checkpoint.every_n_train_steps=2"
    train(dpo_config(whole, initial_weights, option, every_2))
    crash = ["+callbacks.crash._target_=tests.helpers.callbacks.CrashAt", "+callbacks.crash.step=5"]
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(dpo_config(crashed, initial_weights, option, every_2, *crash))
    train(dpo_config(crashed, initial_weights, option, every_2, "ckpt_path=last"))
    expected, resumed = (
        load_file(whole / "model.safetensors"),
        load_file(crashed / "model.safetensors"),
    )
    for name, tensor in resumed.items():
        assert (tensor - expected[name]).abs().max() <= 1e-6, name


FIRST_STEP: dict[str, dict[str, torch.Tensor]] = {}


class FirstStepGradient(L.Callback):
    """The first training batch, and the gradient the optimizer steps with after it."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        FIRST_STEP.setdefault("batch", {k: v.clone() for k, v in batch.items()})

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        grads = {n: p.grad.clone() for n, p in pl_module.model.named_parameters()}
        FIRST_STEP.setdefault("grad", grads)


def test_the_first_step_follows_the_gradient_of_the_mean_pair_loss(
    tmp_path: Path, initial_weights
) -> None:
    FIRST_STEP.clear()
    first = "+callbacks.first._target_=test_dpo_train.FirstStepGradient"
    train(dpo_config(tmp_path, initial_weights, "trainer.max_steps=1", first))
    # Independently, by hand: at the first step the policy is its reference, so the reference's
    # log-probabilities are the policy's own, detached; rows alternate chosen, rejected.
    batch = FIRST_STEP["batch"]
    model = GPT(GPTConfig(**ARCH))
    model.load_state_dict(load_file(initial_weights))
    keep = batch["targets"] != -100
    log_probs = torch.log_softmax(model(batch["input_ids"]), dim=-1)
    token_logps = log_probs.gather(-1, batch["targets"].clamp(min=0).unsqueeze(-1)).squeeze(-1)
    logps = (token_logps * keep).sum(dim=1)
    relative = logps - logps.detach()
    margin = 0.1 * (relative[0::2] - relative[1::2])  # beta 0.1, summed log-probabilities
    (-F.logsigmoid(margin)).mean().backward()
    for name, parameter in model.named_parameters():
        expected = parameter.grad if parameter.grad is not None else torch.zeros_like(parameter)
        torch.testing.assert_close(FIRST_STEP["grad"][name], expected, rtol=1e-4, atol=1e-7)


def test_dpo_on_instruction_data_says_what_to_add(tmp_path: Path, tiny_config) -> None:
    message = (
        r"^method=dpo trains on preference pairs: add data=preference "
        r"\(\{instruction, input, chosen, rejected\} entries\)$"
    )
    with pytest.raises(ValueError, match=message):
        train(tiny_config("method=dpo", run_dir=tmp_path))
