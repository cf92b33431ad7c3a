from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from transformers import GPT2LMHeadModel

from lit_sft.checkpoints import export_hf
from lit_sft.lora import (
    LoRAConfig,
    LoRALinear,
    adapter_config,
    adapter_state_dict,
    add_adapters,
    disable_adapters,
    has_adapters,
    merge_adapters,
    save_adapters,
    trainable_parameters,
)
from lit_sft.model import GPT
from lit_sft.training.sft import InstructionModule
from tests.helpers.gpt2 import EMB, LAYERS, VOCAB, max_diff, our_config, randomize, token_ids

ALL = ("qkv", "attn_proj", "fc", "mlp_proj", "out_head")


def base_model(seed: int = 0) -> GPT:
    model = GPT(our_config())
    randomize(model, seed)
    return model.eval()


def train_adapters(model: GPT, seed: int = 5) -> None:
    """Random adapter values, as training would leave them (B is zero before)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.1)


def test_step_zero_computes_exactly_the_base_model() -> None:
    model = base_model()
    ids = token_ids()
    before = model(ids)
    add_adapters(model, LoRAConfig(rank=4, alpha=8, dropout=0.5, targets=ALL))
    assert torch.equal(model(ids), before)
    model.train()  # dropout on the adapter input changes nothing while B is zero
    assert torch.equal(model(ids), before)


def test_trainable_parameters_are_rank_times_in_plus_out_over_the_targets() -> None:
    model = add_adapters(base_model(), LoRAConfig(rank=3, targets=ALL))
    per_block = (EMB + 3 * EMB) + (EMB + EMB) + (EMB + 4 * EMB) + (4 * EMB + EMB)
    assert trainable_parameters(model) == 3 * (LAYERS * per_block + EMB + VOCAB)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {
        f"{prefix}.{ab}"
        for prefix in [f"blocks.{i}.{p}" for i in range(LAYERS) for p in
                       ("attn.qkv", "attn.proj", "mlp.fc", "mlp.proj")] + ["out_head"]
        for ab in ("lora_a", "lora_b")
    }  # fmt: skip
    default = add_adapters(base_model(), LoRAConfig(rank=2))
    assert trainable_parameters(default) == 2 * LAYERS * per_block


def test_only_adapters_get_gradients_and_reach_the_optimizer() -> None:
    module = InstructionModule(our_config().__dict__)
    add_adapters(module.model, LoRAConfig(rank=2))
    optimizer = module.configure_optimizers()["optimizer"]
    in_optimizer = {id(p) for group in optimizer.param_groups for p in group["params"]}
    adapters = {id(p) for n, p in module.model.named_parameters() if "lora_" in n}
    assert in_optimizer == adapters and len(adapters) == 4 * LAYERS * 2
    module.model(token_ids()).sum().backward()
    for name, param in module.model.named_parameters():
        assert (param.grad is not None) == ("lora_" in name), name


def test_disable_adapters_gives_the_base_model_and_restores_them() -> None:
    model = base_model()
    ids = token_ids()
    base = model(ids)
    add_adapters(model, LoRAConfig(rank=4, targets=ALL))
    train_adapters(model)
    adapted = model(ids)
    assert max_diff(adapted, base) > 1e-2
    with disable_adapters(model):
        assert torch.equal(model(ids), base)
    assert torch.equal(model(ids), adapted)
    assert has_adapters(model) and not has_adapters(base_model())


def test_merged_export_loads_in_transformers_with_the_adapted_logits(tmp_path: Path) -> None:
    model = base_model()
    add_adapters(model, LoRAConfig(rank=4, alpha=16, targets=ALL))
    train_adapters(model)
    ids = token_ids()
    adapted = model(ids).detach()
    # By hand: W + (alpha / rank) B A for one layer.
    qkv = model.blocks[0].attn.qkv
    expected_weight = qkv.weight + 4.0 * qkv.lora_b @ qkv.lora_a
    merged = merge_adapters(copy.deepcopy(model))
    assert not has_adapters(merged)
    assert type(merged.blocks[0].attn.qkv) is torch.nn.Linear
    assert max_diff(merged.blocks[0].attn.qkv.weight, expected_weight) <= 1e-6
    assert max_diff(merged(ids), adapted) <= 1e-5
    export_hf(merged, tmp_path)
    hf = GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert max_diff(hf(ids).logits, adapted) <= 1e-5


def test_adapter_config_is_read_back_from_the_model() -> None:
    config = LoRAConfig(rank=5, alpha=10, dropout=0.1, targets=("fc", "out_head"))
    model = add_adapters(base_model(), config)
    assert adapter_config(model) == config
    assert isinstance(model.out_head, LoRALinear) and model.out_head.scaling == 2.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"targets": ["qkv", "c_attn"]}, r"unknown \['c_attn'\]; valid targets: qkv, attn_proj"),
        ({"targets": []}, "unknown empty list"),
        ({"rank": 0}, "at least 1"),
    ],
)
def test_bad_settings_are_named(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LoRAConfig(**kwargs)


def test_the_adapter_group_maps_onto_lora_config(tmp_path: Path) -> None:
    from lit_sft.cli.train import lora_config
    from tests.helpers.config import compose_config

    assert lora_config(compose_config([], tmp_path)) is None  # adapter=none: full finetuning
    assert lora_config(compose_config(["adapter=lora"], tmp_path)) == LoRAConfig(
        rank=16, alpha=32, dropout=0.05, targets=("qkv", "attn_proj", "fc", "mlp_proj")
    )
    head = compose_config(["adapter=lora", "adapter.targets=[fc,out_head]"], tmp_path)
    assert lora_config(head).targets == ("fc", "out_head")


def test_adapter_a_starts_as_nn_linear_does_and_follows_the_dtype() -> None:
    """A ~ U(-1/sqrt(in), 1/sqrt(in)), nn.Linear's (and peft's) init; float64 stays float64."""
    torch.manual_seed(0)
    model = add_adapters(base_model().double(), LoRAConfig(rank=16, targets=("fc",)))
    lora_a = model.blocks[0].mlp.fc.lora_a
    assert lora_a.dtype == model.blocks[0].mlp.fc.lora_b.dtype == torch.float64
    bound = 1 / EMB**0.5
    assert 0.97 * bound < lora_a.abs().max().item() <= bound
    train_adapters(model)
    assert model(token_ids()).dtype == torch.float64


def test_rank_1_is_allowed_and_adapters_are_added_once() -> None:
    model = add_adapters(base_model(), LoRAConfig(rank=1, targets=("out_head",)))
    assert adapter_config(model) == LoRAConfig(rank=1, targets=("out_head",))  # a single layer
    with pytest.raises(ValueError, match="^the model already has LoRA adapters$"):
        add_adapters(model, LoRAConfig())


def test_adapter_config_names_every_target() -> None:
    config = LoRAConfig(rank=2, alpha=3, dropout=0.0, targets=ALL)
    assert adapter_config(add_adapters(base_model(), config)) == config


def test_saved_adapters_are_the_adapter_tensors_and_the_settings(tmp_path: Path) -> None:
    model = add_adapters(base_model(), LoRAConfig(rank=2, alpha=8, targets=("qkv", "out_head")))
    train_adapters(model)
    tensors = adapter_state_dict(model)
    out = save_adapters(tensors, adapter_config(model), "base.safetensors", tmp_path / "a" / "b")
    assert out == tmp_path / "a" / "b"
    assert save_adapters(tensors, adapter_config(model), "base.safetensors", out) == out  # again
    saved = load_file(out / "adapter_model.safetensors")
    with safe_open(out / "adapter_model.safetensors", framework="pt") as f:
        assert f.metadata() == {"format": "pt"}  # what transformers and peft check
    expected = {
        f"{prefix}.{ab}": getattr(layer, ab)
        for prefix, layer in [(f"blocks.{i}.attn.qkv", model.blocks[i].attn.qkv) for i in
                              range(LAYERS)] + [("out_head", model.out_head)]
        for ab in ("lora_a", "lora_b")
    }  # fmt: skip
    assert saved.keys() == expected.keys()
    for name, tensor in expected.items():
        assert torch.equal(saved[name], tensor), name
    description = {
        "rank": 2,
        "alpha": 8,
        "dropout": 0.05,
        "targets": ["qkv", "out_head"],
        "base_weights": "base.safetensors",
        "scaling": 4.0,
    }
    text = (out / "adapter_config.json").read_text(encoding="utf-8")
    assert text.startswith('{\n  "rank": 2,\n  "alpha": 8,\n') and text.endswith("4.0\n}\n")
    assert json.loads(text) == description


def test_activation_checkpointing_gives_the_adapters_the_same_gradients() -> None:
    """The frozen embeddings give the blocks an input without gradient: recomputation must
    still reach the adapters inside them."""
    grads = []
    for checkpointing in (False, True):
        model = add_adapters(base_model(), LoRAConfig(rank=2, dropout=0.0, targets=ALL))
        train_adapters(model)
        model.activation_checkpointing = checkpointing
        model(token_ids()).logsumexp(-1).mean().backward()
        grads.append({n: p.grad for n, p in model.named_parameters() if p.requires_grad})
    assert grads[1].keys() == grads[0].keys()
    for name, grad in grads[0].items():
        assert grads[1][name] is not None, name
        torch.testing.assert_close(grads[1][name], grad, rtol=0, atol=0, msg=name)
