from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lit_sft.data.encoding import EncodedEntry, collate_instructions
from lit_sft.model import GPT, GPTConfig
from lit_sft.tokenizer import IGNORE_INDEX
from lit_sft.training.steps import backward_token_mean, micro_batches, sft_step

CONFIG = GPTConfig(vocab_size=101, context_length=64, emb_dim=32, n_layers=2, n_heads=4)


def unequal_batch() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    lengths = [3, 40, 5, 7, 38, 2, 30, 4]  # short and long rows land in different micro-batches
    entries = [
        EncodedEntry(torch.randint(0, 100, (n,), generator=generator).tolist(), prompt_length=1)
        for n in lengths
    ]
    return collate_instructions(entries, pad_id=100)


def gradients(model: GPT) -> list[torch.Tensor]:
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    return grads


def test_four_micro_batches_of_two_equal_one_batch_of_eight() -> None:
    torch.manual_seed(0)
    model = GPT(CONFIG)
    batch = unequal_batch()
    tokens = int((batch["targets"] != IGNORE_INDEX).sum())

    # Independent reference: the plain mean cross-entropy of the whole batch.
    logits = model(batch["input_ids"])
    F.cross_entropy(
        logits.flatten(0, 1), batch["targets"].flatten(), ignore_index=IGNORE_INDEX
    ).backward()
    reference = gradients(model)

    whole = backward_token_mean(model, batch, None, 1 / tokens)
    whole_grads = gradients(model)
    accumulated = backward_token_mean(model, batch, 2, 1 / tokens)
    accumulated_grads = gradients(model)

    torch.testing.assert_close(accumulated, whole, atol=1e-4, rtol=1e-6)
    for ref, full, micro in zip(reference, whole_grads, accumulated_grads, strict=True):
        assert (micro - ref).abs().max() <= 1e-6
        assert (full - ref).abs().max() <= 1e-6

    # Averaging per-micro-batch means (what accumulate_grad_batches does) is measurably different.
    for chunk in micro_batches(batch, 2):
        chunk_logits = model(chunk["input_ids"])
        loss = F.cross_entropy(
            chunk_logits.flatten(0, 1), chunk["targets"].flatten(), ignore_index=IGNORE_INDEX
        )
        (loss / 4).backward()
    naive = gradients(model)
    assert max((n - r).abs().max() for n, r in zip(naive, reference, strict=True)) > 1e-4


def test_micro_batches_drop_only_trailing_padding() -> None:
    batch = unequal_batch()
    chunks = micro_batches(batch, 2)
    assert [c["input_ids"].shape for c in chunks] == [(2, 40), (2, 7), (2, 38), (2, 30)]
    for start, chunk in zip(range(0, 8, 2), chunks, strict=True):
        width = chunk["targets"].shape[1]
        assert torch.equal(chunk["targets"], batch["targets"][start : start + 2, :width])
        assert (batch["targets"][start : start + 2, width:] == IGNORE_INDEX).all()


def summed_cross_entropy(model: GPT, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Independent reference: the summed cross-entropy of the full logits, padding ignored."""
    logits = model(batch["input_ids"])
    return F.cross_entropy(
        logits.flatten(0, 1),
        batch["targets"].flatten(),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
    )


def test_backward_token_mean_returns_the_summed_loss_one_backward_per_micro_batch() -> None:
    torch.manual_seed(0)
    model = GPT(CONFIG)
    batch = unequal_batch()
    expected = summed_cross_entropy(model, batch).detach()
    scaled: list[float] = []
    loss_sum = backward_token_mean(model, batch, 3, 0.5, lambda loss: scaled.append(loss.item()))
    torch.testing.assert_close(loss_sum, expected, atol=1e-4, rtol=1e-6)
    assert len(scaled) == 3  # 8 rows in micro-batches of 3, 3 and 2
    assert sum(scaled) == pytest.approx(0.5 * expected.item(), rel=1e-5)


def test_a_micro_batch_without_targets_keeps_one_column() -> None:
    batch = unequal_batch()
    batch["targets"][2:4] = IGNORE_INDEX
    chunks = micro_batches(batch, 2)
    assert [c["input_ids"].shape for c in chunks] == [(2, 40), (2, 1), (2, 38), (2, 30)]
    assert torch.equal(chunks[1]["input_ids"], batch["input_ids"][2:4, :1])


def test_sft_step_zeroes_accumulates_clips_then_steps() -> None:
    torch.manual_seed(0)
    model = GPT(CONFIG)
    batch = unequal_batch()
    tokens = int((batch["targets"] != IGNORE_INDEX).sum())
    expected_loss = summed_cross_entropy(model, batch)
    (expected_loss / tokens).backward()
    reference = gradients(model)
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    events: list[str] = []

    def backward(loss: torch.Tensor) -> None:
        events.append("backward")
        loss.backward()

    def before_step() -> None:  # sees the accumulated gradient, parameters not yet moved
        events.append("before_step")
        for grad, p, p0 in zip(reference, model.parameters(), before, strict=True):
            assert (p.grad - grad).abs().max() <= 1e-6
            assert torch.equal(p, p0)

    for p in model.parameters():  # stale gradients that the step must zero first
        p.grad = torch.ones_like(p)
    loss = sft_step(
        model,
        optimizer,
        batch,
        scale=1 / tokens,
        micro_batch_size=4,
        backward=backward,
        before_step=before_step,
    )
    torch.testing.assert_close(loss, expected_loss.detach(), atol=1e-4, rtol=1e-6)
    assert events == ["backward", "backward", "before_step"]
    for p, p0, grad in zip(model.parameters(), before, reference, strict=True):
        torch.testing.assert_close(p.detach(), p0 - 0.5 * grad, atol=1e-6, rtol=0)


def test_sft_step_without_a_step_only_accumulates() -> None:
    torch.manual_seed(0)
    model = GPT(CONFIG)
    batch = unequal_batch()
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    called: list[str] = []
    sft_step(
        model, optimizer, batch, scale=1.0, take_step=False, before_step=lambda: called.append("x")
    )
    assert called == []
    for p, p0 in zip(model.parameters(), before, strict=True):
        assert torch.equal(p.detach(), p0)
        assert p.grad is not None and p.grad.abs().max() > 1e-4  # accumulated, not stepped


def test_sft_step_steps_without_a_before_step_hook() -> None:
    torch.manual_seed(0)
    model = GPT(CONFIG)
    before = model.out_head.weight.detach().clone()
    sft_step(model, torch.optim.SGD(model.parameters(), lr=0.5), unequal_batch(), scale=1.0)
    assert (
        model.out_head.weight - before - (-0.5) * model.out_head.weight.grad
    ).abs().max() <= 1e-6
    assert (model.out_head.weight - before).abs().max() > 1e-4
