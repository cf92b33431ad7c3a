"""Checkpoints: HF <-> lit_sft parity with transformers, local files, .ckpt, export, resolve."""

from __future__ import annotations

import json
import pickle
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers import GPT2LMHeadModel

from lit_sft.checkpoints import (
    export_hf,
    load_model,
    load_state_dict_file,
    load_weights,
    resolve_weights,
)
from lit_sft.model import GPT
from tests.helpers.gpt2 import (
    CONTEXT,
    EMB,
    HEADS,
    LAYERS,
    TOLERANCE,
    VOCAB,
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
    with pytest.raises(ValueError) as error:
        load_weights(GPT(our_config(tie=True)), path)
    assert str(error.value) == (
        f"{path} has an output head that differs from its token embedding, but the model "
        "ties them (tie_weights=true); set model.tie_weights=false to load both"
    )


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
    # Three dimensions: an unknown tensor must pass through untransposed to be reported.
    tensors["h.0.attn.rotary.weight"] = torch.zeros(2, 3, 4)
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
    assert str(error.value) == (
        f"{tmp_path / 'state.pt'} does not fit the model; does conf/model match the checkpoint?"
        "\n  missing tensor blocks.0.norm1.bias"
        "\n  shape mismatch for blocks.1.mlp.fc.weight: checkpoint (256, 65), model (256, 64) "
        "(lit_sft layout)"
    )


def test_unknown_naming_is_refused_naming_the_first_five_tensors(tmp_path: Path) -> None:
    path = tmp_path / "x.safetensors"
    save_file({f"encoder.{i}": torch.zeros(2) for i in range(6)}, path)
    with pytest.raises(ValueError) as error:
        load_weights(GPT(our_config()), path)
    assert str(error.value) == (
        f"{path} holds neither Hugging Face GPT-2 nor lit_sft weights (no wte.weight or "
        "tok_emb.weight); its first names: "
        "['encoder.0', 'encoder.1', 'encoder.2', 'encoder.3', 'encoder.4']"
    )


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
    for name, content in [("other.ckpt", {"epoch": 1}), ("list.ckpt", [1, 2])]:
        torch.save(content, tmp_path / name)
        with pytest.raises(ValueError, match="not a Lightning checkpoint"):
            load_state_dict_file(tmp_path / name)


def test_lightning_checkpoints_are_loaded_without_unpickling_code(tmp_path: Path) -> None:
    torch.save({"state_dict": {"model.tok_emb.weight": NotATensor()}}, tmp_path / "evil.ckpt")
    with pytest.raises(pickle.UnpicklingError):
        load_state_dict_file(tmp_path / "evil.ckpt")


def test_lora_adapter_checkpoint_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": {"model.tok_emb.weight": torch.zeros(2)}, "adapter": {}}, path)
    with pytest.raises(ValueError) as error:
        load_state_dict_file(path)
    assert str(error.value) == (
        f"{path} holds only LoRA adapters, not a whole model; use the run's merged "
        "model.safetensors (trained with export_weights=true), or python -m lit_sft.export"
    )


@pytest.fixture
def saved_on_gpu() -> Iterator[None]:
    """While active, torch.save tags every tensor "cuda:0", as a file written on a GPU is."""
    entry = (0, lambda storage: "cuda:0", lambda storage, location: None)
    torch.serialization._package_registry.insert(0, entry)
    yield
    torch.serialization._package_registry.remove(entry)


@pytest.mark.usefixtures("saved_on_gpu")
def test_torch_files_saved_on_a_gpu_load_onto_the_cpu(tmp_path: Path) -> None:
    source = GPT(our_config())
    randomize(source, seed=7)
    state = source.state_dict()
    torch.save(state, tmp_path / "state.pt")
    torch.save({"state_dict": {f"model.{k}": t for k, t in state.items()}}, tmp_path / "last.ckpt")
    for name in ("state.pt", "last.ckpt"):
        loaded = load_state_dict_file(tmp_path / name)
        assert loaded.keys() == state.keys()
        for key, tensor in state.items():
            assert loaded[key].device == torch.device("cpu")
            assert torch.equal(loaded[key], tensor), key


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


def hf_config_of(model: GPT, tmp_path: Path) -> dict[str, object]:
    """config.json as export_hf writes it for `model` (also checks its two-space layout)."""
    export_hf(model, tmp_path / "export" / "nested")  # parent folders are created
    text = (tmp_path / "export" / "nested" / "config.json").read_text()
    assert text.startswith('{\n  "architectures": [\n    "GPT2LMHeadModel"\n  ],\n')
    assert text.endswith("\n}\n")
    return json.loads(text)


def test_export_writes_the_transformers_gpt2_config(tmp_path: Path) -> None:
    model = GPT(our_config(tie=True, drop_rate=0.25))
    assert hf_config_of(model, tmp_path) == {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": VOCAB,
        "n_positions": CONTEXT,
        "n_embd": EMB,
        "n_layer": LAYERS,
        "n_head": HEADS,
        "n_inner": None,
        "activation_function": "gelu_new",
        "resid_pdrop": 0.25,
        "embd_pdrop": 0.25,
        "attn_pdrop": 0.25,
        "layer_norm_epsilon": 1e-5,
        "initializer_range": 0.02,
        "tie_word_embeddings": True,
        "torch_dtype": "float32",
    }
    weights = tmp_path / "export" / "nested" / "model.safetensors"
    with safe_open(weights, framework="pt") as f:
        assert f.metadata() == {"format": "pt"}


@pytest.mark.parametrize(("vocab", "special"), [(50256, {}), (50257, {"bos": 50256, "eos": 50256})])
def test_export_names_end_of_text_only_with_gpt2s_vocabulary(
    tmp_path: Path, vocab: int, special: dict[str, int]
) -> None:
    config = hf_config_of(GPT(our_config(vocab_size=vocab, emb_dim=8)), tmp_path)
    found = {key.removesuffix("_token_id"): config[key] for key in config if "token_id" in key}
    assert found == special


def test_export_without_qkv_bias_writes_zero_c_attn_bias_in_the_models_dtype(
    tmp_path: Path,
) -> None:
    model = GPT(our_config(qkv_bias=False)).to(torch.bfloat16)
    export_hf(model, tmp_path)
    tensors = load_file(tmp_path / "model.safetensors")
    for i in range(LAYERS):
        bias = tensors[f"transformer.h.{i}.attn.c_attn.bias"]
        assert bias.dtype == torch.bfloat16
        assert torch.equal(bias, torch.zeros(3 * EMB, dtype=torch.bfloat16))
    assert json.loads((tmp_path / "config.json").read_text())["torch_dtype"] == "bfloat16"


def test_load_model_gives_an_eval_model_with_the_weights_or_a_random_one(tmp_path: Path) -> None:
    hf = random_hf_model(tie=False)
    path = save_hf_checkpoint(hf, tmp_path / "model.safetensors", prefix="", head=True)
    model = load_model(asdict(our_config()), path)
    assert not model.training
    ids = token_ids()
    with torch.no_grad():
        assert max_diff(model(ids), hf(ids).logits) <= TOLERANCE
    fresh = load_model(asdict(our_config()), None)
    assert not fresh.training
    assert not torch.equal(fresh.tok_emb.weight, hf.transformer.wte.weight)
    # "meta": a device other than the CPU that every machine has.
    assert load_model(asdict(our_config()), None, device="meta").tok_emb.weight.is_meta


# ---------------------------------------------------------------------------------------------
# resolve_weights: what the training script calls


def test_resolve_weights(hub: HubServer, tmp_path: Path) -> None:
    hf = random_hf_model(tie=True)
    source = save_hf_checkpoint(hf, tmp_path / "src.safetensors", prefix="", head=False)
    hub.add_file(REPO, source.read_bytes())
    assert resolve_weights(None, REPO) is None
    with pytest.raises(ValueError) as error:
        resolve_weights("pretrained", None)
    assert str(error.value) == (
        "model.weights=pretrained needs model.hub_repo (e.g. openai-community/gpt2); "
        "or set model.weights to a local file, or to null for a random init"
    )
    missing = tmp_path / "nowhere.safetensors"
    with pytest.raises(FileNotFoundError) as missing_error:
        resolve_weights(str(missing), REPO)
    assert str(missing_error.value) == (
        f"weights file {missing} does not exist (absolute: {missing}); model.weights takes "
        "'pretrained', null, a .safetensors/.ckpt/.pt/.pth/.bin file or a folder holding "
        "model.safetensors"
    )
    assert resolve_weights(str(tmp_path / "src.safetensors"), None) == tmp_path / "src.safetensors"

    path = resolve_weights("pretrained", REPO, cache_dir=tmp_path / "cache", endpoint=hub.url)
    assert path.is_relative_to(tmp_path / "cache")
    model = GPT(our_config()).eval()
    load_weights(model, path)
    ids = token_ids()
    with torch.no_grad():
        assert max_diff(model(ids), hf(ids).logits) <= TOLERANCE


def test_resolve_weights_downloads_the_pinned_revision(hub: HubServer, tmp_path: Path) -> None:
    hub.add_file(REPO, b"main weights")
    hub.add_file(REPO, b"v1 weights", revision="v1")
    path = resolve_weights(
        "pretrained", REPO, revision="v1", cache_dir=tmp_path / "cache", endpoint=hub.url
    )
    assert path.read_bytes() == b"v1 weights"


def test_resolve_weights_says_what_to_do_when_the_hub_lacks_the_file(
    hub: HubServer, tmp_path: Path
) -> None:
    with pytest.raises(RuntimeError) as error:
        resolve_weights("pretrained", "nobody/nothing", cache_dir=tmp_path, endpoint=hub.url)
    assert str(error.value).endswith(
        "or pass a local file instead: model.weights=/path/to/model.safetensors"
    )
