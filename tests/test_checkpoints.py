"""Checkpoints: HF <-> lit_sft parity with transformers, local files, .ckpt, export, resolve."""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from transformers import GPT2LMHeadModel

from lit_sft.checkpoints import export_hf, load_state_dict_file, load_weights, resolve_weights
from lit_sft.model import GPT
from tests.helpers.gpt2 import (
    EMB,
    TOLERANCE,
    max_diff,
    our_config,
    random_hf_model,
    randomize,
    save_hf_checkpoint,
    token_ids,
)
from tests.helpers.hub_server import HubServer

REPO = "openai-community/gpt2-test"


@pytest.fixture
def hub() -> Iterator[HubServer]:
    server = HubServer().start()
    yield server
    server.stop()


# ---------------------------------------------------------------------------------------------
# Loading Hugging Face checkpoints


@pytest.mark.parametrize("prefix", ["", "transformer."])
@pytest.mark.parametrize(("separate_head", "tie"), [(True, False), (False, False), (False, True)])
def test_hf_checkpoint_gives_transformers_logits(
    tmp_path: Path, prefix: str, separate_head: bool, tie: bool
) -> None:
    hf = random_hf_model(tie=not separate_head)
    path = save_hf_checkpoint(hf, tmp_path / "model.safetensors", prefix=prefix, head=separate_head)
    model = GPT(our_config(tie)).eval()
    load_weights(model, path)

    ids = token_ids()
    with torch.no_grad():
        assert max_diff(model(ids), hf(ids).logits) <= TOLERANCE
    assert torch.equal(model.out_head.weight, hf.lm_head.weight)
    assert (model.out_head.weight is model.tok_emb.weight) == tie


def test_separate_head_really_is_used(tmp_path: Path) -> None:
    hf = random_hf_model(tie=False)
    assert not torch.equal(hf.lm_head.weight, hf.transformer.wte.weight)
    path = save_hf_checkpoint(hf, tmp_path / "model.safetensors", prefix="", head=True)
    model = GPT(our_config()).eval()
    load_weights(model, path)
    assert not torch.equal(model.out_head.weight, model.tok_emb.weight)


def test_padded_batch_matches_transformers_on_real_positions(tmp_path: Path) -> None:
    hf = random_hf_model(tie=False)
    model = GPT(our_config()).eval()
    load_weights(model, save_hf_checkpoint(hf, tmp_path / "m.safetensors", prefix="", head=True))
    lengths = [12, 7, 3]
    ids = token_ids(batch=3, length=12)
    attention_mask = torch.zeros_like(ids)
    for row, length in enumerate(lengths):
        ids[row, length:] = 0  # right padding
        attention_mask[row, :length] = 1

    with torch.no_grad():
        ours = model(ids)
        theirs = hf(ids, attention_mask=attention_mask).logits
    for row, length in enumerate(lengths):
        assert max_diff(ours[row, :length], theirs[row, :length]) <= TOLERANCE


def test_tied_model_refuses_a_checkpoint_with_a_different_head(tmp_path: Path) -> None:
    hf = random_hf_model(tie=False)
    path = save_hf_checkpoint(hf, tmp_path / "model.safetensors", prefix="", head=True)
    with pytest.raises(ValueError, match="tie_weights=false"):
        load_weights(GPT(our_config(tie=True)), path)


# ---------------------------------------------------------------------------------------------
# Mismatches name the tensor and both shapes


def test_shape_mismatch_names_tensor_and_both_shapes(tmp_path: Path) -> None:
    hf = random_hf_model(tie=True, n_embd=64)
    path = save_hf_checkpoint(hf, tmp_path / "model.safetensors", prefix="transformer.", head=False)
    with pytest.raises(ValueError) as error:
        load_weights(GPT(our_config(emb_dim=32)), path)
    message = str(error.value)
    assert "transformer.wte.weight (lit_sft: tok_emb.weight)" in message
    assert "checkpoint (512, 64), model (512, 32)" in message
    assert "transformer.h.1.attn.c_attn.weight (lit_sft: blocks.1.attn.qkv.weight)" in message
    assert "checkpoint (192, 64), model (96, 32)" in message


def test_missing_and_unexpected_hf_tensors_are_named(tmp_path: Path) -> None:
    hf = random_hf_model(tie=True, n_layer=3)
    tensors = {k: v.clone() for k, v in hf.transformer.state_dict().items()}
    del tensors["h.0.mlp.c_fc.bias"]
    tensors["h.0.attn.rotary.weight"] = torch.zeros(3)
    save_file(tensors, tmp_path / "model.safetensors")
    with pytest.raises(ValueError) as error:
        load_weights(GPT(our_config()), tmp_path)
    message = str(error.value)
    assert "missing tensor h.0.mlp.c_fc.bias (lit_sft: blocks.0.mlp.fc.bias)" in message
    assert "unexpected tensor h.0.attn.rotary.weight" in message
    assert "unexpected tensor h.2.ln_1.weight" in message


def test_lit_sft_mismatches_are_named(tmp_path: Path) -> None:
    state = GPT(our_config()).state_dict()
    del state["blocks.0.norm1.bias"]
    state["blocks.1.mlp.fc.weight"] = torch.zeros(4 * EMB, EMB + 1)
    torch.save(state, tmp_path / "state.pt")
    with pytest.raises(ValueError) as error:
        load_weights(GPT(our_config()), tmp_path / "state.pt")
    message = str(error.value)
    assert "missing tensor blocks.0.norm1.bias" in message
    assert "shape mismatch for blocks.1.mlp.fc.weight: checkpoint (256, 65), model (256, 64)" in (
        message
    )


def test_unknown_naming_is_refused(tmp_path: Path) -> None:
    save_file({"encoder.weight": torch.zeros(2)}, tmp_path / "x.safetensors")
    with pytest.raises(ValueError, match="neither Hugging Face GPT-2 nor lit_sft"):
        load_weights(GPT(our_config()), tmp_path / "x.safetensors")


# ---------------------------------------------------------------------------------------------
# Local files


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".bin"])
@pytest.mark.parametrize("tie", [False, True])
def test_project_state_dict_round_trips(tmp_path: Path, suffix: str, tie: bool) -> None:
    source = GPT(our_config(tie))
    randomize(source, seed=3)
    path = tmp_path / f"state{suffix}"
    torch.save(source.state_dict(), path)
    target = GPT(our_config(tie))
    load_weights(target, path)
    for name, tensor in source.state_dict().items():
        assert torch.equal(target.state_dict()[name], tensor), name
    assert (target.out_head.weight is target.tok_emb.weight) == tie


def test_state_dict_without_head_starts_head_from_embedding(tmp_path: Path) -> None:
    source = GPT(our_config())
    randomize(source, seed=4)
    state = source.state_dict()
    del state["out_head.weight"]
    torch.save(state, tmp_path / "state.pt")
    target = GPT(our_config())
    load_weights(target, tmp_path / "state.pt")
    assert torch.equal(target.out_head.weight, source.tok_emb.weight)
    assert target.out_head.weight is not target.tok_emb.weight


class NotATensor:
    pass


def test_torch_files_are_loaded_without_unpickling_code(tmp_path: Path) -> None:
    torch.save({"tok_emb.weight": NotATensor()}, tmp_path / "evil.pt")
    with pytest.raises(pickle.UnpicklingError):
        load_state_dict_file(tmp_path / "evil.pt")
    torch.save({"tok_emb.weight": 3}, tmp_path / "not_tensors.pt")
    with pytest.raises(ValueError, match="does not hold a state dict"):
        load_state_dict_file(tmp_path / "not_tensors.pt")


@pytest.mark.parametrize("tie", [False, True])
def test_lightning_checkpoint_gives_the_trained_model(tmp_path: Path, tie: bool) -> None:
    trained = GPT(our_config(tie=tie)).eval()
    randomize(trained, seed=3)
    # What Lightning saves for InstructionModule: the GPT under `model.`, beside optimizer state.
    state = {f"model.{name}": tensor for name, tensor in trained.state_dict().items()}
    checkpoint = {"state_dict": state, "optimizer_states": [{}], "global_step": 7}
    torch.save(checkpoint, tmp_path / "last.ckpt")
    model = GPT(our_config(tie=tie)).eval()
    load_weights(model, tmp_path / "last.ckpt")
    ids = token_ids()
    with torch.no_grad():
        assert torch.equal(model(ids), trained(ids))
    torch.save({"epoch": 1}, tmp_path / "other.ckpt")
    with pytest.raises(ValueError, match="not a Lightning checkpoint"):
        load_state_dict_file(tmp_path / "other.ckpt")


def test_bad_local_paths_fail_clearly(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        load_state_dict_file(tmp_path)  # a folder without model.safetensors
    (tmp_path / "weights.npz").write_bytes(b"")
    with pytest.raises(ValueError, match="unsupported weights file"):
        load_state_dict_file(tmp_path / "weights.npz")


# ---------------------------------------------------------------------------------------------
# Export to transformers


@pytest.mark.parametrize("tie", [False, True])
def test_export_loads_in_transformers_with_same_logits(tmp_path: Path, tie: bool) -> None:
    model = GPT(our_config(tie)).eval()
    randomize(model, seed=5)  # untied: head and embedding now differ
    export_hf(model, tmp_path)
    hf, info = GPT2LMHeadModel.from_pretrained(tmp_path, output_loading_info=True)
    hf.eval()

    assert not any(info.values()), info  # nothing missing, unexpected or newly initialised
    assert hf.config.tie_word_embeddings == tie
    assert (hf.lm_head.weight.data_ptr() == hf.transformer.wte.weight.data_ptr()) == tie
    assert torch.equal(hf.lm_head.weight, model.out_head.weight)
    assert tie or not torch.equal(hf.lm_head.weight, hf.transformer.wte.weight)
    ids = token_ids()
    with torch.no_grad():
        assert max_diff(model(ids), hf(ids).logits) <= TOLERANCE


def test_export_round_trips_through_load_weights(tmp_path: Path) -> None:
    source = GPT(our_config())
    randomize(source, seed=6)
    export_hf(source, tmp_path)
    target = GPT(our_config())
    load_weights(target, tmp_path)
    for name, tensor in source.state_dict().items():
        assert torch.equal(target.state_dict()[name], tensor), name


# ---------------------------------------------------------------------------------------------
# resolve_weights: what the training script calls


def test_resolve_weights(hub: HubServer, tmp_path: Path) -> None:
    hf = random_hf_model(tie=True)
    source = save_hf_checkpoint(hf, tmp_path / "src.safetensors", prefix="", head=False)
    hub.add_file(REPO, source.read_bytes())
    assert resolve_weights(None, REPO) is None
    with pytest.raises(ValueError, match="model.hub_repo"):
        resolve_weights("pretrained", None)
    with pytest.raises(FileNotFoundError, match="nowhere.safetensors"):
        resolve_weights(str(tmp_path / "nowhere.safetensors"), REPO)
    assert resolve_weights(str(tmp_path / "src.safetensors"), None) == tmp_path / "src.safetensors"

    path = resolve_weights("pretrained", REPO, cache_dir=tmp_path / "cache", endpoint=hub.url)
    model = GPT(our_config()).eval()
    load_weights(model, path)
    ids = token_ids()
    with torch.no_grad():
        assert max_diff(model(ids), hf(ids).logits) <= TOLERANCE
