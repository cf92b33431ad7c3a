"""Weights: Hub download against a local server, HF <-> lit_sft parity with transformers, export."""

from __future__ import annotations

import os
import pickle
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from transformers import GPT2Config, GPT2LMHeadModel

from lit_sft.model import GPT, GPTConfig
from lit_sft.weights import (
    DEFAULT_HUB_URL,
    WeightsDownloadError,
    default_cache_dir,
    download_hub_weights,
    export_hf,
    hub_file_url,
    load_state_dict_file,
    load_weights,
    resolve_weights,
)
from tests.hub_server import HubServer

VOCAB, CONTEXT, EMB, LAYERS, HEADS = 512, 128, 64, 2, 4
REPO = "openai-community/gpt2-test"
TOLERANCE = 1e-4


@pytest.fixture
def hub() -> Iterator[HubServer]:
    server = HubServer().start()
    yield server
    server.stop()


def our_config(tie: bool = False, **overrides: int) -> GPTConfig:
    sizes = dict(vocab_size=VOCAB, context_length=CONTEXT, emb_dim=EMB, n_layers=LAYERS)
    sizes.update(n_heads=HEADS, **overrides)
    return GPTConfig(**sizes, tie_weights=tie)


def randomize(model: torch.nn.Module, seed: int) -> None:
    """Random values everywhere, so zero biases or unit LayerNorms cannot hide a wrong mapping."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.2)


def random_hf_model(tie: bool, n_embd: int = EMB, n_layer: int = LAYERS) -> GPT2LMHeadModel:
    config = GPT2Config(
        vocab_size=VOCAB,
        n_positions=CONTEXT,
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=HEADS,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        tie_word_embeddings=tie,
        bos_token_id=VOCAB - 1,
        eos_token_id=VOCAB - 1,
    )
    model = GPT2LMHeadModel(config)
    randomize(model, seed=1)
    return model.eval()


def save_hf_checkpoint(model: GPT2LMHeadModel, path: Path, *, prefix: str, head: bool) -> Path:
    """Saves `model` as the Hub's files look: optional `transformer.` prefix and lm_head."""
    tensors = {f"{prefix}{k}": v.clone() for k, v in model.transformer.state_dict().items()}
    if head:
        tensors["lm_head.weight"] = model.lm_head.weight.detach().clone()
    for i in range(model.config.n_layer):  # the mask buffers old checkpoints carry
        tensors[f"{prefix}h.{i}.attn.bias"] = torch.tril(torch.ones(1, 1, CONTEXT, CONTEXT))
        tensors[f"{prefix}h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    save_file(tensors, path)
    return path


def token_ids(batch: int = 2, length: int = 12) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(2))


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


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
# Download


def hf_checkpoint_bytes(tmp_path: Path) -> bytes:
    hf = random_hf_model(tie=True)
    return save_hf_checkpoint(hf, tmp_path / "src.safetensors", prefix="", head=False).read_bytes()


def cached_files(cache: Path) -> list[str]:
    repo_dir = cache / REPO
    return sorted(p.name for p in repo_dir.iterdir()) if repo_dir.exists() else []


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def test_hub_urls_and_cache_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert hub_file_url("openai-community/gpt2-xl") == (
        f"{DEFAULT_HUB_URL}/openai-community/gpt2-xl/resolve/main/model.safetensors"
    )
    monkeypatch.delenv("LIT_SFT_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "lit_sft" / "hub"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "lit_sft" / "hub"
    monkeypatch.setenv("LIT_SFT_CACHE", str(tmp_path / "mine"))
    assert default_cache_dir() == tmp_path / "mine" / "hub"


def test_download_caches_and_second_run_makes_no_request(
    hub: HubServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = hf_checkpoint_bytes(tmp_path)
    hub.add_file(REPO, data)
    cache = tmp_path / "cache"

    path = download_hub_weights(REPO, cache_dir=cache, base_url=hub.url, progress=True)
    assert path == cache / REPO / "model.safetensors"
    assert path.read_bytes() == data
    assert [r.method for r in hub.requests] == ["HEAD", "GET", "GET"]  # GET follows to the CDN
    assert REPO in capsys.readouterr().err  # the progress bar
    assert "model.safetensors.part" not in cached_files(cache)

    hub.requests.clear()
    assert download_hub_weights(REPO, cache_dir=cache, base_url=hub.url) == path
    assert download_hub_weights(REPO, cache_dir=cache, base_url=closed_port_url()) == path
    assert hub.requests == []


def test_cache_dir_comes_from_environment(
    hub: HubServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub.add_file(REPO, b"weights")
    monkeypatch.setenv("LIT_SFT_CACHE", str(tmp_path / "env-cache"))
    path = download_hub_weights(REPO, base_url=hub.url, progress=False)
    assert path == tmp_path / "env-cache" / "hub" / REPO / "model.safetensors"


def test_interrupted_download_resumes_with_range(hub: HubServer, tmp_path: Path) -> None:
    data = hf_checkpoint_bytes(tmp_path)
    hub.add_file(REPO, data)
    cache, cut = tmp_path / "cache", len(data) // 3
    hub.cut_after = cut

    with pytest.raises(WeightsDownloadError, match="next run resumes"):
        download_hub_weights(REPO, cache_dir=cache, base_url=hub.url, progress=False)
    part = cache / REPO / "model.safetensors.part"
    assert part.stat().st_size == cut
    assert "model.safetensors" not in cached_files(cache)

    hub.requests.clear()
    path = download_hub_weights(REPO, cache_dir=cache, base_url=hub.url, progress=False)
    assert path.read_bytes() == data
    assert [r.range for r in hub.requests if r.method == "GET"] == [f"bytes={cut}-"] * 2
    assert hub.bytes_sent == len(data)
    assert not part.exists()


def test_server_ignoring_range_restarts_the_file(hub: HubServer, tmp_path: Path) -> None:
    data = hf_checkpoint_bytes(tmp_path)
    hub.add_file(REPO, data)
    hub.cut_after = len(data) // 2
    with pytest.raises(WeightsDownloadError):
        download_hub_weights(REPO, cache_dir=tmp_path, base_url=hub.url, progress=False)
    hub.ignore_range = True
    path = download_hub_weights(REPO, cache_dir=tmp_path, base_url=hub.url, progress=False)
    assert path.read_bytes() == data


def test_stale_part_longer_than_the_file_is_replaced(hub: HubServer, tmp_path: Path) -> None:
    data = hf_checkpoint_bytes(tmp_path)
    hub.add_file(REPO, data)
    (tmp_path / REPO).mkdir(parents=True)
    (tmp_path / REPO / "model.safetensors.part").write_bytes(b"x" * (len(data) + 1))
    path = download_hub_weights(REPO, cache_dir=tmp_path, base_url=hub.url, progress=False)
    assert path.read_bytes() == data
    assert all(r.range is None for r in hub.requests)


@pytest.mark.parametrize(
    ("fault", "reason"), [("corrupt", "sha256"), ("truncate", "bytes arrived")]
)
def test_corrupt_or_truncated_download_is_deleted(
    hub: HubServer, tmp_path: Path, fault: str, reason: str
) -> None:
    data = hf_checkpoint_bytes(tmp_path)
    hub.add_file(REPO, data)
    cache = tmp_path / "cache"
    hub.corrupt = fault == "corrupt"
    hub.truncate_to = len(data) - 100 if fault == "truncate" else None

    with pytest.raises(WeightsDownloadError, match=f"corrupt .*{reason}"):
        download_hub_weights(REPO, cache_dir=cache, base_url=hub.url, progress=False)
    assert cached_files(cache) == ["model.safetensors.lock"]

    hub.corrupt, hub.truncate_to = False, None
    path = download_hub_weights(REPO, cache_dir=cache, base_url=hub.url, progress=False)
    assert path.read_bytes() == data


def test_plain_mirror_without_hub_headers(hub: HubServer, tmp_path: Path) -> None:
    data = os.urandom(5000)
    hub.add_file(REPO, data)
    hub.plain = True
    hub.truncate_to = 4000  # HEAD's Content-Length still says 5000
    with pytest.raises(WeightsDownloadError, match="4000 bytes arrived, 5000 announced"):
        download_hub_weights(REPO, cache_dir=tmp_path, base_url=hub.url, progress=False)
    hub.truncate_to = None
    path = download_hub_weights(REPO, cache_dir=tmp_path, base_url=hub.url, progress=False)
    assert path.read_bytes() == data


def test_renamed_repository_is_followed(hub: HubServer, tmp_path: Path) -> None:
    data = hf_checkpoint_bytes(tmp_path)
    hub.add_file(REPO, data)
    hub.add_alias("gpt2-test", REPO)
    path = download_hub_weights("gpt2-test", cache_dir=tmp_path, base_url=hub.url, progress=False)
    assert path.read_bytes() == data
    assert [r.method for r in hub.requests] == ["HEAD", "HEAD", "GET", "GET", "GET"]


def test_unreachable_hub_names_url_and_local_fallback(tmp_path: Path) -> None:
    base_url = closed_port_url()
    with pytest.raises(WeightsDownloadError) as error:
        download_hub_weights(REPO, cache_dir=tmp_path, base_url=base_url, progress=False)
    assert hub_file_url(REPO, base_url=base_url) in str(error.value)
    assert "model.weights=/path/to/model.safetensors" in str(error.value)
    assert "model.safetensors" not in cached_files(tmp_path)


def test_missing_repository_names_url_and_status(hub: HubServer, tmp_path: Path) -> None:
    with pytest.raises(WeightsDownloadError) as error:
        download_hub_weights(REPO, cache_dir=tmp_path, base_url=hub.url, progress=False)
    assert f"{hub_file_url(REPO, base_url=hub.url)} answered HTTP 404" in str(error.value)


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

    path = resolve_weights("pretrained", REPO, cache_dir=tmp_path / "cache", base_url=hub.url)
    model = GPT(our_config()).eval()
    load_weights(model, path)
    ids = token_ids()
    with torch.no_grad():
        assert max_diff(model(ids), hf(ids).logits) <= TOLERANCE
