"""accumulate_grad_batches and gradient_clip_algorithm: one optimizer step per N batches on the
mean over all their target tokens (pairs), as one batch holding their rows would take."""

from __future__ import annotations

import importlib
import math
from functools import partial
from pathlib import Path

import lightning as L
import pytest
import torch
from safetensors.torch import load_file
from torch.utils.data import DataLoader

from lit_sft.cli.train import train
from lit_sft.data.encoding import EncodedEntry, collate_instructions
from lit_sft.data.preference import EncodedPair, collate_preferences
from lit_sft.errors import InvalidInput
from lit_sft.training.base import TrainingModule
from lit_sft.training.dpo import DPOModule
from lit_sft.training.sft import SFTModule
from tests.helpers.config import TINY_RUN, compose_config

ARCH = dict(vocab_size=101, context_length=64, emb_dim=32, n_layers=2, n_heads=4)
collate = partial(collate_instructions, pad_id=100)
collate_pairs = partial(collate_preferences, pad_id=100)
# Rows of very unequal target counts: a mean of per-batch means would weigh them differently.
LENGTHS = [3, 40, 5, 7, 38, 2, 30, 4]


def entries(lengths: list[int] = LENGTHS) -> list[EncodedEntry]:
    generator = torch.Generator().manual_seed(0)
    return [
        EncodedEntry(torch.randint(0, 100, (n,), generator=generator).tolist(), prompt_length=1)
        for n in lengths
    ]


class RecordSteps(L.Callback):
    """The gradients (clipped) and learning rate of every optimizer step."""

    def __init__(self) -> None:
        self.grads: list[list[torch.Tensor]] = []
        self.lrs: list[float] = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.grads.append([p.grad.clone() for p in pl_module.model.parameters()])
        self.lrs.append(optimizer.param_groups[0]["lr"])


def fit(module: TrainingModule, loader: DataLoader, datamodule=None, **trainer_args) -> RecordSteps:
    record = RecordSteps()
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        callbacks=[record],
        **trainer_args,
    )
    if datamodule is None:
        trainer.fit(module, train_dataloaders=loader)
    else:
        datamodule.train_dataloader = lambda: loader
        trainer.fit(module, datamodule=datamodule)
    module.fitted_steps = trainer.global_step
    return record


def sft(accumulate: int, **options) -> SFTModule:
    torch.manual_seed(0)
    return SFTModule(ARCH, lr=1e-3, accumulate_grad_batches=accumulate, **options)


def sft_loader(batch_size: int, lengths: list[int] = LENGTHS) -> DataLoader:
    return DataLoader(entries(lengths), batch_size=batch_size, shuffle=False, collate_fn=collate)


def assert_same(first: list[torch.Tensor], second: list[torch.Tensor], atol: float) -> None:
    for a, b in zip(first, second, strict=True):
        assert (a - b).abs().max() <= atol


def test_two_accumulated_batches_of_four_step_as_one_batch_of_eight() -> None:
    whole, accumulated = sft(1), sft(2)
    one = fit(whole, sft_loader(8), max_steps=1)
    two = fit(accumulated, sft_loader(4), max_steps=1)
    assert whole.fitted_steps == accumulated.fitted_steps == 1  # two batches, one step
    assert len(one.grads) == len(two.grads) == 1
    assert_same(one.grads[0], two.grads[0], atol=1e-6)
    assert_same(list(whole.parameters()), list(accumulated.parameters()), atol=1e-6)

    # Independent reference: the mean cross-entropy of all 8 rows' targets, from initial weights.
    reference = sft(1)
    batch = collate(entries())
    logits = reference.model(batch["input_ids"])
    torch.nn.functional.cross_entropy(logits.flatten(0, 1), batch["targets"].flatten()).backward()
    assert_same(one.grads[0], [p.grad for p in reference.model.parameters()], atol=1e-6)
    # The mean of the two batches' means is measurably another gradient.
    reference.model.zero_grad()
    for half in (entries()[:4], entries()[4:]):
        batch = collate(half)
        logits = reference.model(batch["input_ids"])
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), batch["targets"].flatten())
        (loss / 2).backward()
    naive = [p.grad for p in reference.model.parameters()]
    assert max((n - g).abs().max() for n, g in zip(naive, one.grads[0], strict=True)) > 1e-4


def test_steps_and_the_cosine_schedule_count_optimizer_steps() -> None:
    # 4 batches an epoch in groups of 3: a full group and a partial one, each one step.
    module = sft(3, lr_schedule="cosine", warmup_steps=1)
    record = fit(module, sft_loader(2), max_epochs=2)
    assert module.fitted_steps == len(record.lrs) == 4
    # Warmup over step 0, then cosine over the 4 optimizer steps to 0.1: 1, 1, 0.775, 0.325.
    expected = [1.0, 1.0, 0.1 + 0.45 * (1 + math.cos(math.pi / 3)), 0.1 + 0.45 * 0.5]
    assert record.lrs == pytest.approx([1e-3 * m for m in expected])


def test_the_last_partial_group_is_its_batches_mean() -> None:
    # 3 batches of 2 in groups of 2: the epoch's last step is on the third batch alone.
    whole, accumulated = sft(1), sft(2)
    fit(whole, sft_loader(4, LENGTHS[:4]), max_steps=1)
    record = fit(accumulated, sft_loader(2, LENGTHS[:4] + LENGTHS[4:6]), max_epochs=1)
    assert accumulated.fitted_steps == 2
    reference = SFTModule(ARCH)
    reference.model.load_state_dict(whole.model.state_dict())
    batch = collate(entries()[4:6])
    logits = reference.model(batch["input_ids"])
    torch.nn.functional.cross_entropy(logits.flatten(0, 1), batch["targets"].flatten()).backward()
    assert_same(record.grads[1], [p.grad for p in reference.model.parameters()], atol=1e-6)


@pytest.mark.parametrize("accumulate", [1, 2])
def test_clipping_by_value_clips_each_gradient(accumulate: int) -> None:
    clip = 1e-4
    record = fit(
        sft(accumulate, grad_clip=clip, gradient_clip_algorithm="value"),
        sft_loader(8 // accumulate),
        max_steps=1,
    )
    grads = torch.cat([g.flatten() for g in record.grads[0]])
    assert grads.abs().max() == pytest.approx(clip)
    assert grads.norm() > 10 * clip  # not clipped by norm
    unclipped = fit(sft(accumulate), sft_loader(8 // accumulate), max_steps=1)
    expected = torch.cat([g.flatten() for g in unclipped.grads[0]]).clamp(-clip, clip)
    assert (grads - expected).abs().max() <= 1e-9


def test_bad_accumulation_options_are_named() -> None:
    with pytest.raises(InvalidInput, match="gradient_clip_algorithm 'l2'.*norm, value"):
        SFTModule(ARCH, gradient_clip_algorithm="l2")
    with pytest.raises(InvalidInput, match="accumulate_grad_batches=0"):
        SFTModule(ARCH, accumulate_grad_batches=0)


class PairsData(L.LightningDataModule):
    """What DPOModule asks of its data: `pairs_loader`."""

    def pairs_loader(self, split: str) -> DataLoader:
        raise AssertionError("the reference is live, not precomputed")


def pair_list(count: int) -> list[EncodedPair]:
    rows = entries([(7 * i) % 23 + 2 for i in range(2 * count)])
    return [EncodedPair(i, rows[2 * i], rows[2 * i + 1]) for i in range(count)]


def dpo(accumulate: int) -> DPOModule:
    torch.manual_seed(0)
    return DPOModule(ARCH, lr=1e-3, accumulate_grad_batches=accumulate)


def pairs_loader(batch_size: int) -> DataLoader:
    return DataLoader(pair_list(5), batch_size=batch_size, shuffle=False, collate_fn=collate_pairs)


def test_dpo_accumulated_batches_step_as_one_batch_of_their_pairs() -> None:
    # Batches of 3 and 2 pairs: a mean of the two batches' means would over-weight the 2.
    whole, accumulated = dpo(1), dpo(2)
    one = fit(whole, pairs_loader(5), datamodule=PairsData(), max_steps=1)
    two = fit(accumulated, pairs_loader(3), datamodule=PairsData(), max_steps=1)
    assert accumulated.fitted_steps == 1
    assert_same(one.grads[0], two.grads[0], atol=1e-6)
    # Independent reference: the gradient of the plain mean of the 5 pairs' losses.
    reference = dpo(1)
    reference.configure_model()  # the frozen reference: the same initial weights
    out, _ = reference.preference_losses(collate_pairs(pair_list(5)))
    out.losses.mean().backward()
    grads = [p.grad for p in reference.model.parameters()]
    assert_same(two.grads[0], grads, atol=1e-6)
    assert max(g.abs().max() for g in grads) > 1e-4  # not all zero


class CrashAtBatch(L.Callback):
    """Raises at the start of the `batch`-th train batch (from 0), after it was fetched."""

    def __init__(self, batch: int) -> None:
        self.batch, self.started = batch, 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.started += 1
        if self.started == self.batch + 1:
            raise RuntimeError("simulated crash")


def test_a_run_stopped_between_the_batches_of_a_step_resumes_exactly(tmp_path: Path) -> None:
    run = [*TINY_RUN, "data.shuffle=true", "module.lr=1e-3", "module.accumulate_grad_batches=2"]
    train(compose_config(run, tmp_path / "whole"))
    crash = [
        "+callbacks.crash._target_=test_accumulate_batches.CrashAtBatch",
        "+callbacks.crash.batch=5",
    ]
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(compose_config([*run, *crash], tmp_path / "run"))
    checkpoint = torch.load(
        tmp_path / "run" / "checkpoints" / "last-interrupted.ckpt", weights_only=False
    )
    assert checkpoint["global_step"] == 2 and checkpoint["accumulation"]["batches"] == 1
    train(compose_config([*run, "ckpt_path=last"], tmp_path / "run"))
    weights, reference = (load_file(tmp_path / d / "model.safetensors") for d in ("run", "whole"))
    for name, tensor in weights.items():
        torch.testing.assert_close(tensor, reference[name], rtol=0, atol=1e-6, msg=name)


def test_validating_between_the_batches_of_a_step_keeps_its_gradients(tmp_path: Path) -> None:
    run = [*TINY_RUN, "module.lr=1e-3"]
    aligned = [*run, "module.accumulate_grad_batches=2"]  # validates after batches 2 and 4
    train(compose_config(aligned, tmp_path / "aligned"))
    # Lightning's own spelling, validating after batches 3 and 6: in the middle of a step.
    between = [*run, "trainer.accumulate_grad_batches=2", "trainer.val_check_interval=3"]
    train(compose_config(between, tmp_path / "between"))
    weights, reference = (
        load_file(tmp_path / d / "model.safetensors") for d in ("between", "aligned")
    )
    for name, tensor in weights.items():
        torch.testing.assert_close(tensor, reference[name], rtol=0, atol=1e-6, msg=name)


GRADS: list[torch.Tensor] = []


class RecordGradients(L.Callback):
    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        GRADS.append(torch.cat([p.grad.flatten() for p in pl_module.parameters()]))


@pytest.mark.parametrize("spelling", ["module.grad_clip", "trainer.gradient_clip_val"])
def test_the_config_reaches_clipping_by_value(tiny_config, spelling: str) -> None:
    GRADS.clear()
    algorithm = spelling.split(".")[0] + ".gradient_clip_algorithm=value"
    cfg = tiny_config(
        "trainer.max_steps=2",
        f"{spelling}=1e-4",
        algorithm,
        "+callbacks.record._target_=test_accumulate_batches.RecordGradients",
    )
    train(cfg)
    assert len(GRADS) == 2
    for grads in GRADS:
        assert grads.abs().max() == pytest.approx(1e-4) and grads.norm() > 1e-3


@pytest.mark.parametrize(
    "target",
    [
        "lit_sft.training.sft.InstructionModule",
        "lit_sft.training.sft.SFTModule",
        "lit_sft.training.dpo.DPOModule",
        "lit_sft.data.InstructionDataModule",
        "lit_sft.data.sft.InstructionDataModule",
        "lit_sft.data.preference.PreferenceDataModule",
    ],
)
def test_the_targets_of_older_run_folders_still_import(target: str) -> None:
    module, name = target.rsplit(".", 1)
    assert isinstance(getattr(importlib.import_module(module), name), type)
