from __future__ import annotations

import pytest
import torch

from lit_sft.model import GPT, GPTConfig, KVCache

TINY = GPTConfig(vocab_size=97, context_length=32, emb_dim=32, n_layers=2, n_heads=4)


def test_logits_shape_and_causality() -> None:
    torch.manual_seed(0)
    model = GPT(TINY).eval()
    ids = torch.randint(0, 97, (2, 10))
    logits = model(ids)
    assert logits.shape == (2, 10, 97)
    changed = ids.clone()
    changed[:, 6:] = (changed[:, 6:] + 1) % 97
    # A later token never changes the logits of earlier positions.
    torch.testing.assert_close(model(changed)[:, :6], logits[:, :6])
    assert not torch.allclose(model(changed)[:, 6:], logits[:, 6:])


def test_cached_decoding_equals_full_forward() -> None:
    torch.manual_seed(0)
    model = GPT(TINY).eval()
    ids = torch.randint(0, 97, (1, 12))
    full = model(ids)
    cache = KVCache(TINY, batch_size=1, max_len=12)
    prefix = model(ids[:, :8], cache=cache)
    steps = []
    for t in range(8, 12):
        mask = torch.ones(1, 1, 1, t + 1, dtype=torch.bool)
        steps.append(model(ids[:, t : t + 1], attn_mask=mask, cache=cache))
    torch.testing.assert_close(torch.cat([prefix, *steps], dim=1), full, atol=1e-5, rtol=1e-5)


def test_head_starts_as_a_copy_or_is_tied() -> None:
    untied = GPT(TINY)
    assert untied.out_head.weight is not untied.tok_emb.weight
    assert torch.equal(untied.out_head.weight, untied.tok_emb.weight)
    tied = GPT(GPTConfig(**{**TINY.__dict__, "tie_weights": True}))
    assert tied.out_head.weight is tied.tok_emb.weight
    assert tied.num_parameters() == untied.num_parameters() - 97 * 32


def test_positions_past_the_context_are_rejected() -> None:
    with pytest.raises(ValueError, match="context length 32"):
        GPT(TINY)(torch.zeros(1, 33, dtype=torch.long))


def test_heads_must_divide_the_width() -> None:
    with pytest.raises(ValueError, match="not divisible"):
        GPTConfig(emb_dim=30, n_heads=4)


def test_gpt2_small_has_124m_parameters_when_tied() -> None:
    config = GPTConfig(tie_weights=True)
    with torch.device("meta"):
        assert GPT(config).num_parameters() == 124_439_808


def saved_and_grads(checkpointing: bool) -> tuple[int, dict[str, torch.Tensor]]:
    """Bytes autograd keeps for backward, and the gradients, of one training forward."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(**{**TINY.__dict__, "drop_rate": 0.1, "n_layers": 3})).train()
    model.activation_checkpointing = checkpointing
    ids = torch.randint(0, 97, (2, 24))
    saved = []

    def keep(tensor: torch.Tensor) -> torch.Tensor:
        saved.append(tensor.numel() * tensor.element_size())
        return tensor

    torch.manual_seed(1)  # the same dropout masks on both paths
    with torch.autograd.graph.saved_tensors_hooks(keep, lambda tensor: tensor):
        loss = model(ids).logsumexp(-1).mean()
    loss.backward()
    return sum(saved), {name: p.grad for name, p in model.named_parameters()}


def test_activation_checkpointing_keeps_less_and_gives_the_same_gradients() -> None:
    plain_bytes, plain = saved_and_grads(False)
    checkpointed_bytes, checkpointed = saved_and_grads(True)
    assert plain.keys() == checkpointed.keys()
    for name, grad in plain.items():
        torch.testing.assert_close(checkpointed[name], grad, rtol=0, atol=0, msg=name)
    # Only each block's input stays (plus embeddings and head): far less than every activation.
    assert checkpointed_bytes < plain_bytes / 3
