from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from transformers import GPT2Config

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
    model = GPT(TINY).eval()
    with pytest.raises(ValueError, match="^position 32 is past the context length 32$"):
        model(torch.zeros(1, 33, dtype=torch.long))
    assert model(torch.zeros(1, 32, dtype=torch.long)).shape == (1, 32, 97)  # exactly full


def test_cache_length_and_overflow_are_checked() -> None:
    with pytest.raises(ValueError, match="^cache length 33 exceeds the context length 32$"):
        KVCache(TINY, batch_size=1, max_len=33)
    model = GPT(TINY).eval()
    cache = KVCache(TINY, batch_size=1, max_len=32)  # exactly the context
    model(torch.zeros(1, 31, dtype=torch.long), cache=cache)
    one = torch.ones(1, 1, 1, 32, dtype=torch.bool)
    model(torch.zeros(1, 1, dtype=torch.long), attn_mask=one, cache=cache)
    assert cache.length == 32
    with pytest.raises(ValueError, match="^KV cache overflow: 33 positions, room for 32$"):
        model(torch.zeros(1, 1, dtype=torch.long), positions=torch.zeros(1, 1).long(), cache=cache)


def test_decoding_on_a_filled_cache_needs_a_mask() -> None:
    model = GPT(TINY).eval()
    cache = KVCache(TINY, batch_size=1, max_len=4)
    model(torch.zeros(1, 1, dtype=torch.long), cache=cache)  # one position is enough to refuse
    with pytest.raises(
        ValueError, match="^decoding on a filled cache needs an explicit attn_mask$"
    ):
        model(torch.zeros(1, 1, dtype=torch.long), cache=cache)


def test_heads_must_divide_the_width() -> None:
    with pytest.raises(
        ValueError,
        match="^emb_dim 30 is not divisible by n_heads 4, in model.arch; choose n_heads that "
        "divides emb_dim$",
    ):
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


def test_defaults_are_gpt2_small_untied_without_dropout() -> None:
    hf = GPT2Config()  # transformers' defaults are GPT-2 small
    assert GPTConfig() == GPTConfig(
        vocab_size=hf.vocab_size,
        context_length=hf.n_positions,
        emb_dim=hf.n_embd,
        n_layers=hf.n_layer,
        n_heads=hf.n_head,
        drop_rate=0.0,
        qkv_bias=True,
        tie_weights=False,
    )
    assert GPTConfig().head_dim == 64
    no_bias = GPT(GPTConfig(**{**TINY.__dict__, "qkv_bias": False}))
    assert no_bias.blocks[0].attn.qkv.bias is None
    assert GPT(TINY).num_parameters() - no_bias.num_parameters() == 2 * 3 * 32


def test_init_is_gpt2s() -> None:
    """Normal(0, 0.02) weights, 0.02 / sqrt(2 * n_layers) for the residual projections, zero biases
    (transformers' GPT2PreTrainedModel._init_weights)."""
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=2000, context_length=256, emb_dim=64, n_layers=3, n_heads=4)
    model = GPT(config)
    residual_std = 0.02 / math.sqrt(6)
    for name, param in model.named_parameters():
        if name.endswith("bias"):
            assert torch.equal(param, torch.zeros_like(param)), name
        elif "norm" in name:
            assert torch.equal(param, torch.ones_like(param)), name
        else:
            expected_std = residual_std if name.endswith("proj.weight") else 0.02
            assert abs(param.mean().item()) < expected_std / 10, name
            assert param.std().item() == pytest.approx(expected_std, rel=0.05), name
    norms = [m for m in model.modules() if isinstance(m, nn.LayerNorm)]
    assert [m.eps for m in norms] == [GPT2Config().layer_norm_epsilon] * (2 * 3 + 1)


def dropout_model(drop_rate: float, attention_only: bool = False) -> GPT:
    """TINY with dropout, the same weights whatever the rate; optionally only attention's."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(**{**TINY.__dict__, "drop_rate": drop_rate}))
    if attention_only:
        for module in model.modules():
            if isinstance(module, nn.Dropout):
                module.p = 0.0
    return model


def test_attention_dropout_only_while_training() -> None:
    ids = torch.randint(0, 97, (2, 10), generator=torch.Generator().manual_seed(3))
    plain = dropout_model(0.0).eval()(ids)
    model = dropout_model(0.5, attention_only=True)
    torch.testing.assert_close(model.eval()(ids), plain, rtol=0, atol=0)
    model.train()
    assert not torch.allclose(model(ids), plain)


def block_runs(model: GPT, ids: torch.Tensor) -> int:
    """How many times the first block runs in a training forward and backward."""
    block = model.blocks[0]
    runs = []

    def counted(*args: object) -> torch.Tensor:
        runs.append(1)
        return type(block).forward(block, *args)

    block.forward = counted
    model(ids).sum().backward()
    del block.forward
    return len(runs)


def test_activation_checkpointing_is_off_by_default_and_reruns_each_block() -> None:
    model = GPT(TINY).train()
    ids = torch.randint(0, 97, (1, 6))
    assert block_runs(model, ids) == 1
    model.activation_checkpointing = True
    assert block_runs(model, ids) == 2


def test_activation_checkpointing_keeps_the_mask_and_the_cache() -> None:
    """With gradients on, a checkpointed model decodes from its cache as the plain one does."""
    torch.manual_seed(0)
    model = GPT(TINY).eval()
    ids = torch.randint(0, 97, (1, 8))
    full = model(ids).detach()
    model.activation_checkpointing = True
    cache = KVCache(TINY, batch_size=1, max_len=8)
    prefix = model(ids[:, :6], cache=cache)
    mask = torch.ones(1, 1, 2, 8, dtype=torch.bool)
    mask[0, 0, 0, 7] = False  # causal between the two new positions
    steps = model(ids[:, 6:], attn_mask=mask, cache=cache)
    torch.testing.assert_close(torch.cat([prefix, steps], 1).detach(), full, atol=1e-5, rtol=1e-5)


def test_the_cache_keeps_the_rows_it_is_asked_for() -> None:
    cache = KVCache(TINY, batch_size=3, max_len=8)
    for layer in range(TINY.n_layers):
        shape = (3, TINY.n_heads, 5, TINY.head_dim)
        cache.update(layer, torch.randn(shape), torch.randn(shape))
    cache.length = 5
    keys, values = cache.keys.clone(), cache.values.clone()
    cache.keep_rows(torch.tensor([2, 0]))
    assert cache.keys.shape == (TINY.n_layers, 2, TINY.n_heads, 8, TINY.head_dim)
    assert torch.equal(cache.keys[:, :, :, :5], keys[:, [2, 0], :, :5])
    assert torch.equal(cache.values[:, :, :, :5], values[:, [2, 0], :, :5])
    assert cache.length == 5 and cache.max_len == 8
