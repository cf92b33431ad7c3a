"""Packed batches: the padded batch's examples and losses, without its padding."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch

from lit_sft.cli.train import train
from lit_sft.data.encoding import EncodedEntry, collate_instructions
from lit_sft.data.packing import PackedCollate, pack_batch, pack_rows
from lit_sft.data.sft import InstructionDataModule
from lit_sft.model import GPT, GPTConfig
from lit_sft.tokenizer import IGNORE_INDEX
from lit_sft.training.losses import token_losses
from lit_sft.training.steps import backward_token_mean, micro_batches, packing


def test_rows_are_filled_first_fit_longest_first() -> None:
    # Longest first: 6 opens row 0, 5 row 1, 4 row 2; 3 fits row 1, 2 fits row 0.
    assert pack_rows([5, 3, 4, 2, 6], row_length=8) == [[4, 3], [0, 1], [2]]
    # Longer than a row: a row of its own.
    assert pack_rows([12, 3, 3], row_length=8) == [[0], [1, 2]]
    assert pack_rows([], row_length=8) == []


def test_a_packed_batch_by_hand() -> None:
    """Entry A: [10, 11, 12] (prompt [10]); entry B: [20, 21] (prompt [20]); rows of 8."""
    batch = [EncodedEntry([10, 11, 12], 1), EncodedEntry([20, 21], 1)]
    padded = collate_instructions(batch, pad_id=99)
    packed = pack_batch(padded, [3, 2], row_length=8, pad_id=99)
    assert packed["input_ids"].tolist() == [[10, 11, 12, 20, 21]]
    # Each entry's targets as padded: shifted by one, its first end-of-text (here 99) kept.
    assert packed["targets"].tolist() == [[11, 12, 99, 21, 99]]
    assert packed["positions"].tolist() == [[0, 1, 2, 0, 1]]
    allowed = packed["attn_mask"][0, 0].int().tolist()
    assert allowed == [
        [1, 0, 0, 0, 0],
        [1, 1, 0, 0, 0],
        [1, 1, 1, 0, 0],
        [0, 0, 0, 1, 0],
        [0, 0, 0, 1, 1],
    ]
    # Two rows of 3: the padding's targets are ignored and it attends to itself only.
    two = pack_batch(padded, [3, 2], row_length=3, pad_id=99)
    assert two["input_ids"].tolist() == [[10, 11, 12], [20, 21, 99]]
    assert two["targets"].tolist() == [[11, 12, 99], [21, 99, IGNORE_INDEX]]
    assert two["attn_mask"][1, 0].int().tolist() == [[1, 0, 0], [1, 1, 0], [0, 0, 1]]


def encoded_batches(
    tmp_path: Path, **options
) -> tuple[InstructionDataModule, list[list[EncodedEntry]]]:
    """A DataModule over 24 entries of different lengths, and its first three train batches."""
    entries = [
        {"instruction": f"Repeat {i} times.", "input": "x" * (i % 3), "output": "word " * i}
        for i in range(1, 25)
    ]
    path = tmp_path / "data.json"
    path.write_text(json.dumps(entries))
    dm = InstructionDataModule(str(path), batch_size=6, **options)
    dm.setup("fit")
    encoded = dm.encoded["train"]
    return dm, [encoded[i : i + 6] for i in range(0, 18, 6)]


def tiny_gpt() -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=50257, context_length=64, emb_dim=32, n_layers=2, n_heads=4))


@pytest.mark.parametrize(
    "options", [{}, {"mask_instructions": True}, {"allowed_max_length": 20}], ids=str
)
def test_a_packed_batch_has_the_padded_ones_loss_and_gradient(tmp_path: Path, options) -> None:
    dm, batches = encoded_batches(tmp_path, **options)
    model = tiny_gpt()
    packed_collate = PackedCollate(dm.collate(), row_length=120)
    for examples in batches:
        results = []
        for batch in (dm.collate()(examples), packed_collate(examples)):
            model.zero_grad()
            total = backward_token_mean(model, batch, None, scale=1.0)
            targets = int((batch["targets"] != IGNORE_INDEX).sum())
            grads = [p.grad.clone() for p in model.parameters()]
            results.append((float(total) / targets, targets, grads, batch["input_ids"].numel()))
        (padded_loss, padded_targets, padded_grads, padded_size), packed_result = results
        packed_loss, packed_targets, packed_grads, packed_size = packed_result
        assert packed_targets == padded_targets
        assert packed_loss == pytest.approx(padded_loss, abs=1e-5)
        for padded_grad, packed_grad in zip(padded_grads, packed_grads, strict=True):
            torch.testing.assert_close(packed_grad, padded_grad, rtol=1e-4, atol=1e-6)
        # The padding is gone (cut to 20 tokens, every entry is as long as the batch).
        assert packed_size < padded_size or "allowed_max_length" in options


def test_examples_in_one_row_do_not_see_each_other(tmp_path: Path) -> None:
    dm, (examples, *_) = encoded_batches(tmp_path)
    model = tiny_gpt().eval()
    collate = PackedCollate(dm.collate(), row_length=1000)
    lengths = [len(e.tokens) for e in examples]
    (row,) = pack_rows(lengths, 1000)  # all six in one row; where does entry 0 sit?
    start = sum(lengths[i] for i in row[: row.index(0)])
    entry_0 = torch.zeros(sum(lengths), dtype=torch.bool)
    entry_0[start : start + lengths[0]] = True
    changed = [EncodedEntry([7] * lengths[0], examples[0].prompt_length), *examples[1:]]
    per_position = []
    with torch.no_grad():
        for batch in (collate(examples), collate(changed)):
            losses, keep = token_losses(
                model, batch["input_ids"], batch["targets"], **packing(batch)
            )
            full = torch.zeros(keep.shape)
            full[keep] = losses
            per_position.append(full[0])
    before, after = per_position
    torch.testing.assert_close(after[~entry_0], before[~entry_0])
    assert not torch.allclose(after[entry_0], before[entry_0])


def test_micro_batches_of_packed_rows_add_up_to_the_batch(tmp_path: Path) -> None:
    dm, (examples, *_) = encoded_batches(tmp_path)
    batch = PackedCollate(dm.collate(), row_length=25)(examples)
    assert batch["input_ids"].shape[0] >= 3
    chunks = micro_batches(batch, 1)
    assert all(c["attn_mask"].shape[-1] == c["input_ids"].shape[1] for c in chunks)
    model = tiny_gpt()
    whole = backward_token_mean(model, batch, None, scale=1.0)
    parts = backward_token_mean(model, batch, 1, scale=1.0)
    assert float(parts) == pytest.approx(float(whole), rel=1e-6)


def examples_of(batch: dict[str, torch.Tensor]) -> list[tuple[int, ...]]:
    """The token ids of each entry in a padded or packed batch (instructions not masked)."""
    found = []
    positions = batch.get("positions")
    for r, (row, targets) in enumerate(zip(batch["input_ids"], batch["targets"], strict=True)):
        end = int((targets != IGNORE_INDEX).nonzero().max()) + 1  # the padding's are ignored
        starts = [0] if positions is None else (positions[r, :end] == 0).nonzero().flatten()
        bounds = [*map(int, starts), end]
        found += [tuple(row[a:b].tolist()) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    return sorted(found)


@pytest.mark.parametrize("group_by_length", [False, True])
def test_the_packed_loader_draws_the_padded_ones_batches(tmp_path: Path, group_by_length) -> None:
    dm, _ = encoded_batches(tmp_path, group_by_length=group_by_length, seed=3)
    padded = list(dm.train_dataloader())
    dm.packing = True
    packed = list(dm.train_dataloader())
    assert all("attn_mask" in b for b in packed) and not any("attn_mask" in b for b in padded)
    assert [examples_of(b) for b in packed] == [examples_of(b) for b in padded]
    assert sum(len(examples_of(b)) for b in packed) == len(padded) * dm.batch_size
    # Reproducible from the seed; resumed mid-epoch, the rest of the epoch as before.
    loader = dm.train_dataloader()
    batches = iter(loader)
    first = next(batches)
    torch.testing.assert_close(first, packed[0])
    state = loader.state_dict()
    resumed = dm.train_dataloader()
    resumed.load_state_dict(state)
    rest = list(resumed)
    assert len(rest) == len(packed) - 1
    for a, b in zip(rest, packed[1:], strict=True):
        torch.testing.assert_close(a, b)


class RecordLosses(L.Callback):
    losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        RecordLosses.losses.append(float(outputs["loss"] if isinstance(outputs, dict) else outputs))


def test_training_on_packed_batches_gives_the_padded_losses(tiny_config, tmp_path: Path) -> None:
    runs = {}
    for packed in ("false", "true"):
        RecordLosses.losses = []
        cfg = tiny_config(
            f"data.packing={packed}",
            "export_weights=false",
            "+callbacks.record._target_=test_packing.RecordLosses",
            run_dir=tmp_path / packed,
        )
        train(cfg)
        runs[packed] = RecordLosses.losses
    assert len(runs["true"]) == 4
    assert runs["true"] == pytest.approx(runs["false"], abs=1e-5)
