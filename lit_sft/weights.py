"""GPT-2 weights: download from the Hugging Face Hub, load into `GPT`, export for `transformers`."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urljoin, urlparse

import requests
import torch
import urllib3
from safetensors.torch import load_file, save_file
from torch import Tensor
from tqdm import tqdm

from lit_sft.files import cache_root
from lit_sft.model import GPT, GPTConfig

DEFAULT_HUB_URL = "https://huggingface.co"
WEIGHTS_FILENAME = "model.safetensors"
LOCAL_FILE_HINT = "pass a local file instead: model.weights=/path/to/model.safetensors"

_TIMEOUT_S = (10, 60)  # (connect, read between two chunks)
_CHUNK_BYTES = 1 << 20
_MAX_RELATIVE_REDIRECTS = 5
_REPO_ID = re.compile(r"[\w.-]+(/[\w.-]+)?")
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")

# Hugging Face name (after any `transformer.` prefix) -> (lit_sft name, stored as Conv1D).
# GPT-2's original code used a Conv1D layer that keeps its weight as [in, out] and computes
# x @ W; nn.Linear keeps [out, in] and computes x @ W.T, so those weights are transposed.
# c_attn holds q, k and v side by side on the `out` axis, the order our single `qkv` splits in.
_HF_TOP = {
    "wte.weight": ("tok_emb.weight", False),
    "wpe.weight": ("pos_emb.weight", False),
    "ln_f.weight": ("final_norm.weight", False),
    "ln_f.bias": ("final_norm.bias", False),
    "lm_head.weight": ("out_head.weight", False),
}
_HF_BLOCK = {
    "ln_1.weight": ("norm1.weight", False),
    "ln_1.bias": ("norm1.bias", False),
    "attn.c_attn.weight": ("attn.qkv.weight", True),
    "attn.c_attn.bias": ("attn.qkv.bias", False),
    "attn.c_proj.weight": ("attn.proj.weight", True),
    "attn.c_proj.bias": ("attn.proj.bias", False),
    "ln_2.weight": ("norm2.weight", False),
    "ln_2.bias": ("norm2.bias", False),
    "mlp.c_fc.weight": ("mlp.fc.weight", True),
    "mlp.c_fc.bias": ("mlp.fc.bias", False),
    "mlp.c_proj.weight": ("mlp.proj.weight", True),
    "mlp.c_proj.bias": ("mlp.proj.bias", False),
}
# Causal-mask buffers that older transformers versions saved with the weights; not parameters.
_HF_MASK_BUFFERS = (".attn.bias", ".attn.masked_bias")


class WeightsDownloadError(RuntimeError):
    """A weights file could not be downloaded, or what arrived failed verification."""


# ---------------------------------------------------------------------------------------------
# Download


def hub_file_url(
    repo: str, filename: str = WEIGHTS_FILENAME, base_url: str = DEFAULT_HUB_URL
) -> str:
    """URL of `filename` on the main branch of the Hub repository `repo`."""
    return f"{base_url.rstrip('/')}/{repo}/resolve/main/{filename}"


def default_cache_dir() -> Path:
    """The `hub/` folder of lit_sft's cache (see `lit_sft.files.cache_root`)."""
    return cache_root() / "hub"


def download_hub_weights(
    repo: str,
    *,
    cache_dir: str | Path | None = None,
    base_url: str = DEFAULT_HUB_URL,
    progress: bool = True,
) -> Path:
    """Path of `repo`'s model.safetensors in the cache, downloaded and verified if not there."""
    if not _REPO_ID.fullmatch(repo) or ".." in repo:
        raise ValueError(f"not a Hub repository id: {repo!r} (expected e.g. openai-community/gpt2)")
    target = Path(cache_dir or default_cache_dir()).expanduser() / repo / WEIGHTS_FILENAME
    # Only verified files are ever renamed into place, so one that exists needs no request;
    # checked before taking the lock so that a read-only, pre-filled cache works.
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(target.with_name(target.name + ".lock")):
        if target.is_file():  # another process finished it while we waited
            return target
        url = hub_file_url(repo, WEIGHTS_FILENAME, base_url)
        part = target.with_name(target.name + ".part")
        try:
            with requests.Session() as session:
                size, sha256 = _remote_file_info(session, url)
                size = _fetch_to_part(session, url, part, size, progress=progress, desc=repo)
        except requests.RequestException as exc:
            raise _download_error(url, part, exc) from exc
        _verify_or_delete(part, url, size, sha256)
        os.replace(part, target)
    return target


@contextmanager
def _exclusive_lock(path: Path) -> Iterator[None]:
    # Parallel jobs of a sweep would otherwise append to the same .part file.
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _remote_file_info(session: requests.Session, url: str) -> tuple[int | None, str | None]:
    """(size, sha256) the Hub announces for `url`; either is None where it says nothing."""
    # The Hub answers a HEAD on an LFS file with a redirect to its CDN that carries the file's
    # size and sha256 in X-Linked-Size / X-Linked-Etag, so redirects are not followed here,
    # except relative ones (a renamed repository) that stay on the Hub.
    headers = {"Accept-Encoding": "identity"}
    response = session.head(url, headers=headers, allow_redirects=False, timeout=_TIMEOUT_S)
    for _ in range(_MAX_RELATIVE_REDIRECTS):
        location = response.headers.get("Location", "")
        if not (response.is_redirect and location and not urlparse(location).netloc):
            break
        url = urljoin(url, location)
        response = session.head(url, headers=headers, allow_redirects=False, timeout=_TIMEOUT_S)
    response.raise_for_status()
    size = response.headers.get("X-Linked-Size")
    if size is None and not response.is_redirect:
        size = response.headers.get("Content-Length")
    etag = response.headers.get("X-Linked-Etag") or response.headers.get("ETag") or ""
    etag = etag.removeprefix("W/").strip('"').lower()
    # Non-LFS files carry a git sha1 as ETag; only a 64-digit hex is an LFS sha256.
    sha256 = etag if _SHA256_HEX.fullmatch(etag) else None
    return (int(size) if size is not None else None), sha256


def _fetch_to_part(
    session: requests.Session,
    url: str,
    part: Path,
    size: int | None,
    *,
    progress: bool,
    desc: str,
) -> int | None:
    """Appends the rest of `url` to `part`, resuming with a Range request; returns the size."""
    start = part.stat().st_size if part.exists() else 0
    if size is None or start > size:  # the .part cannot be, or is not, a prefix of this file
        start = 0
    elif start == size:
        return size
    headers = {"Accept-Encoding": "identity"}
    if start:
        headers["Range"] = f"bytes={start}-"
    with session.get(url, headers=headers, stream=True, timeout=_TIMEOUT_S) as response:
        response.raise_for_status()
        if start and response.status_code != 206:  # the server ignored Range: start over
            start = 0
        if size is None and "Content-Length" in response.headers:
            size = int(response.headers["Content-Length"])
        bar = tqdm(
            total=size,
            initial=start,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=desc,
            disable=not progress,
        )
        with bar, open(part, "ab" if start else "wb") as out:
            _copy_body(response, out, bar)
    return size


def _copy_body(response: requests.Response, out: BinaryIO, bar: tqdm) -> None:
    """Streams the body of `response` into `out`, writing every byte that arrives."""
    # The raw stream, undecoded: requests' iter_content drops a partly filled chunk when the
    # connection breaks, and those bytes would then be fetched again. Accept-Encoding is
    # identity, so raw bytes are the file; a server that compresses anyway fails verification.
    try:
        for chunk in response.raw.stream(_CHUNK_BYTES, decode_content=False):
            out.write(chunk)
            bar.update(len(chunk))
    except urllib3.exceptions.HTTPError as exc:
        raise requests.ConnectionError(exc, response=response) from exc


def _download_error(url: str, part: Path, exc: requests.RequestException) -> WeightsDownloadError:
    """An error for a failed request that says what happened and what to do next."""
    if isinstance(exc, requests.HTTPError):
        status = exc.response.status_code if exc.response is not None else "?"
        return WeightsDownloadError(
            f"{url} answered HTTP {status} (is model.hub_repo right?); "
            f"to use a file you have, {LOCAL_FILE_HINT}"
        )
    message = f"could not download {url} ({type(exc).__name__}: {exc})"
    kept = part.stat().st_size if part.exists() else 0
    if kept:
        message += f"; the {kept} bytes received are kept in {part} and the next run resumes"
    return WeightsDownloadError(f"{message}. Without network access, {LOCAL_FILE_HINT}")


def _verify_or_delete(part: Path, url: str, size: int | None, sha256: str | None) -> None:
    """Checks `part` against the announced size and sha256; deletes it if either differs."""
    actual_size = part.stat().st_size
    problem = None
    if size is not None and actual_size != size:
        problem = f"{actual_size} bytes arrived, {size} announced"
    elif sha256 is not None and (actual := _sha256_of(part)) != sha256:
        problem = f"sha256 {actual} does not match the announced {sha256}"
    if problem:
        part.unlink()
        raise WeightsDownloadError(f"download of {url} is corrupt ({problem}); deleted it")


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def resolve_weights(
    weights: str | None,
    hub_repo: str | None,
    *,
    cache_dir: str | Path | None = None,
    base_url: str = DEFAULT_HUB_URL,
) -> Path | None:
    """Weights file to load: None (random init), the Hub download ("pretrained"), or a path."""
    if weights is None:
        return None
    if weights == "pretrained":
        if hub_repo is None:
            raise ValueError(
                "model.weights=pretrained needs model.hub_repo (e.g. openai-community/gpt2); "
                "or set model.weights to a local file, or to null for a random init"
            )
        return download_hub_weights(hub_repo, cache_dir=cache_dir, base_url=base_url)
    path = Path(weights).expanduser()
    if not path.exists():
        raise FileNotFoundError(
            f"weights file {path} does not exist (absolute: {path.absolute()}); "
            "model.weights takes 'pretrained', null, or a .safetensors/.pt/.pth/.bin file "
            "or a folder holding model.safetensors"
        )
    return path


# ---------------------------------------------------------------------------------------------
# Load


def load_state_dict_file(path: str | Path) -> dict[str, Tensor]:
    """Tensors of a .safetensors file, a folder holding model.safetensors, or a torch state dict."""
    path = Path(path).expanduser()
    if path.is_dir():
        path = path / WEIGHTS_FILENAME
    if not path.is_file():
        raise FileNotFoundError(f"no weights file at {path}")
    if path.suffix == ".safetensors":
        return load_file(path)
    if path.suffix in (".pt", ".pth", ".bin"):
        # weights_only refuses pickled code, so a downloaded .bin cannot run anything.
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict) or not all(isinstance(t, Tensor) for t in state.values()):
            raise ValueError(f"{path} does not hold a state dict (a mapping of names to tensors)")
        return dict(state)
    raise ValueError(f"unsupported weights file {path}: expected .safetensors, .pt, .pth or .bin")


def load_weights(model: GPT, path: str | Path) -> None:
    """Loads a checkpoint in Hugging Face GPT-2 or lit_sft naming into `model`, strictly."""
    raw = load_state_dict_file(path)
    if _is_hf_naming(raw):
        state, file_names = _from_hf_naming(raw, model.config.n_layers)
    elif "tok_emb.weight" in raw:
        state, file_names = raw, {}
    else:
        raise ValueError(
            f"{path} holds neither Hugging Face GPT-2 nor lit_sft weights "
            f"(no wte.weight or tok_emb.weight); its first names: {sorted(raw)[:5]}"
        )
    _fill_head(state, model.config, path)
    _check_compatible(state, model, file_names, path)
    model.load_state_dict(state)


def _is_hf_naming(state: dict[str, Tensor]) -> bool:
    return "wte.weight" in state or "transformer.wte.weight" in state


def _hf_name_map(n_layers: int) -> dict[str, tuple[str, bool]]:
    """Hugging Face name -> (lit_sft name, transpose) for a model of `n_layers` blocks."""
    names = dict(_HF_TOP)
    for i in range(n_layers):
        names.update(
            {f"h.{i}.{hf}": (f"blocks.{i}.{ours}", t) for hf, (ours, t) in _HF_BLOCK.items()}
        )
    return names


def _from_hf_naming(
    raw: dict[str, Tensor], n_layers: int
) -> tuple[dict[str, Tensor], dict[str, str]]:
    """State dict in lit_sft naming and layout, and lit_sft name -> name in the file."""
    name_map = _hf_name_map(n_layers)
    file_names = {ours: hf for hf, (ours, _) in name_map.items()}
    state = {}
    for key, tensor in raw.items():
        name = key.removeprefix("transformer.")
        if name.endswith(_HF_MASK_BUFFERS):
            continue
        # Unknown names pass through unchanged so the check reports them as unexpected.
        ours, transpose = name_map.get(name, (key, False))
        state[ours] = tensor.t() if transpose else tensor
        file_names[ours] = key
    return state, file_names


def _fill_head(state: dict[str, Tensor], config: GPTConfig, path: str | Path) -> None:
    """Starts a head the file lacks from the token embedding; refuses to tie two different ones."""
    if "out_head.weight" not in state:
        if "tok_emb.weight" in state:
            state["out_head.weight"] = state["tok_emb.weight"]
        return
    emb, head = state.get("tok_emb.weight"), state["out_head.weight"]
    same = emb is not None and emb.shape == head.shape and torch.equal(emb, head)
    if config.tie_weights and not same:
        raise ValueError(
            f"{path} has an output head that differs from its token embedding, but the model "
            "ties them (tie_weights=true); set model.tie_weights=false to load both"
        )


def _check_compatible(
    state: dict[str, Tensor], model: GPT, file_names: dict[str, str], path: str | Path
) -> None:
    """Raises on names the model lacks or needs, or on shapes that differ, naming each tensor."""
    expected = model.state_dict()

    def describe(name: str) -> str:
        in_file = file_names.get(name, name)
        return name if in_file == name else f"{in_file} (lit_sft: {name})"

    problems = [f"unexpected tensor {describe(n)}" for n in state if n not in expected]
    problems += [f"missing tensor {describe(n)}" for n in expected if n not in state]
    problems += [
        f"shape mismatch for {describe(n)}: checkpoint {tuple(state[n].shape)}, "
        f"model {tuple(t.shape)} (lit_sft layout)"
        for n, t in expected.items()
        if n in state and state[n].shape != t.shape
    ]
    if problems:
        raise ValueError(
            f"{path} does not fit the model; does conf/model match the checkpoint?\n  "
            + "\n  ".join(problems)
        )


# ---------------------------------------------------------------------------------------------
# Export


def export_hf(model: GPT, out_dir: str | Path) -> None:
    """Writes model.safetensors and config.json that transformers.GPT2LMHeadModel loads."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_file(_to_hf_naming(model), out / WEIGHTS_FILENAME, metadata={"format": "pt"})
    config_text = json.dumps(_hf_config(model), indent=2) + "\n"
    (out / "config.json").write_text(config_text, encoding="utf-8")


def _to_hf_naming(model: GPT) -> dict[str, Tensor]:
    """The model's tensors in the layout and naming `GPT2LMHeadModel.save_pretrained` writes."""
    config = model.config
    state = model.state_dict()
    tensors = {}
    for hf, (ours, transpose) in _hf_name_map(config.n_layers).items():
        if hf == "lm_head.weight":
            if config.tie_weights:  # transformers re-ties it to wte on load
                continue
        else:
            hf = f"transformer.{hf}"
        tensor = state.get(ours)
        if tensor is None:  # qkv_bias=False: GPT-2 always has a c_attn bias, zero is the same
            tensor = torch.zeros(3 * config.emb_dim, dtype=state["tok_emb.weight"].dtype)
        tensor = tensor.t() if transpose else tensor
        tensors[hf] = tensor.detach().cpu().contiguous()
    return tensors


def _hf_config(model: GPT) -> dict[str, object]:
    """config.json for `transformers.GPT2Config` describing `model`."""
    config = model.config
    hf_config: dict[str, object] = {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": config.vocab_size,
        "n_positions": config.context_length,
        "n_embd": config.emb_dim,
        "n_layer": config.n_layers,
        "n_head": config.n_heads,
        "n_inner": None,
        "activation_function": "gelu_new",  # the tanh approximation our MLP uses
        "resid_pdrop": config.drop_rate,
        "embd_pdrop": config.drop_rate,
        "attn_pdrop": config.drop_rate,
        "layer_norm_epsilon": model.final_norm.eps,
        "initializer_range": 0.02,
        "tie_word_embeddings": config.tie_weights,
        # The key most Hub configs carry; transformers 5 reads it as `dtype`, 4.x as is.
        "torch_dtype": str(model.tok_emb.weight.dtype).removeprefix("torch."),
    }
    end_of_text = 50256  # GPT-2's <|endoftext|>, only meaningful with its vocabulary
    if config.vocab_size > end_of_text:
        hf_config.update(bos_token_id=end_of_text, eos_token_id=end_of_text)
    return hf_config
