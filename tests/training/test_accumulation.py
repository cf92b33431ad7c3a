from __future__ import annotations

import torch
import torch.nn.functional as F

from lit_sft.data.sft import EncodedEntry, collate_instructions
from lit_sft.model import GPT, GPTConfig
from lit_sft.tokenizer import IGNORE_INDEX
from lit_sft.training.losses import backward_token_mean, micro_batches

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
