"""GPT-2 weights in and out: which file to load, loading it into `GPT`, exporting for transformers.

Loads Hugging Face GPT-2 checkpoints (`.safetensors`, `.bin`, a folder), lit_sft state dicts and
lit_sft's Lightning checkpoints (`.ckpt`); exports the Hugging Face layout.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from lit_sft.errors import InvalidInput, MissingFile
from lit_sft.hub import WEIGHTS_FILENAME, WEIGHTS_HINT, HubFile, hub_download
from lit_sft.model import GPT, GPTConfig
from lit_sft.tokenizer import END_OF_TEXT

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


def resolve_weights(
    weights: str | None,
    hub_repo: str | None,
    *,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    endpoint: str | None = None,
) -> Path | None:
    """Weights file to load: None (random init), the Hub download ("pretrained"), or a path.

    "pretrained" is `hub_repo`'s model.safetensors at `revision` in the Hugging Face cache
    (`cache_dir`, None: huggingface_hub's), from `endpoint` (None: $HF_ENDPOINT or the Hub).
    """
    if weights is None:
        return None
    if weights == "pretrained":
        if hub_repo is None:
            raise InvalidInput(
                "model.weights=pretrained needs model.hub_repo (e.g. openai-community/gpt2); "
                "or set model.weights to a local file, or to null for a random init"
            )
        file = HubFile(hub_repo, WEIGHTS_FILENAME, revision=revision)
        return hub_download(file, hint=WEIGHTS_HINT, cache_dir=cache_dir, endpoint=endpoint)
    path = Path(weights).expanduser()
    if not path.exists():
        raise MissingFile(
            f"weights file {path} does not exist (absolute: {path.absolute()}); "
            "model.weights takes 'pretrained', null, a .safetensors/.ckpt/.pt/.pth/.bin file "
            "or a folder holding model.safetensors"
        )
    return path


def load_state_dict_file(path: str | Path) -> dict[str, Tensor]:
    """Tensors of a .safetensors file, a folder holding model.safetensors, or a torch state dict."""
    path = Path(path).expanduser()
    if path.is_dir():
        path = path / WEIGHTS_FILENAME
    if not path.is_file():
        raise MissingFile(f"no weights file at {path}; pass model.weights=<file or folder>")
    if path.suffix == ".safetensors":
        return load_file(path)
    if path.suffix == ".ckpt":
        return _lightning_checkpoint_model(path)
    if path.suffix in (".pt", ".pth", ".bin"):
        # weights_only refuses pickled code, so a downloaded .bin cannot run anything.
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict) or not all(isinstance(t, Tensor) for t in state.values()):
            raise InvalidInput(f"{path} does not hold a state dict (a mapping of names to tensors)")
        return dict(state)
    raise InvalidInput(
        f"unsupported weights file {path}: expected .safetensors, .ckpt, .pt, .pth or .bin"
    )


def _lightning_checkpoint_model(path: Path) -> dict[str, Tensor]:
    """The GPT weights inside a lit_sft Lightning checkpoint (its `model.` tensors)."""
    # weights_only refuses pickled code; a Lightning checkpoint holds only tensors and plain data.
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    state = checkpoint.get("state_dict") if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise InvalidInput(f"{path} is not a Lightning checkpoint (it has no state_dict)")
    if "adapter" in checkpoint:
        raise InvalidInput(
            f"{path} holds only LoRA adapters, not a whole model; use the run's merged "
            "model.safetensors (trained with export_weights=true), or python -m lit_sft.export"
        )
    prefix = "model."
    return {k.removeprefix(prefix): t for k, t in state.items() if k.startswith(prefix)}


def load_model(model_config: dict[str, Any], weights: Path | None, device: str = "cpu") -> GPT:
    """A GPT in eval mode on `device`, with `weights` loaded unless None (random init)."""
    model = GPT(GPTConfig(**model_config))
    if weights is not None:
        load_weights(model, weights)
    return model.to(device).eval()


def load_weights(model: GPT, path: str | Path) -> None:
    """Loads a checkpoint in Hugging Face GPT-2 or lit_sft naming into `model`, strictly."""
    raw = load_state_dict_file(path)
    if _is_hf_naming(raw):
        state, file_names = _from_hf_naming(raw, model.config.n_layers)
    elif "tok_emb.weight" in raw:
        state, file_names = raw, {}
    else:
        raise InvalidInput(
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
        raise InvalidInput(
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
        raise InvalidInput(
            f"{path} does not fit the model; does conf/model match the checkpoint?\n  "
            + "\n  ".join(problems)
        )


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
    if config.vocab_size > END_OF_TEXT:  # GPT-2's <|endoftext|>, only with its vocabulary
        hf_config.update(bos_token_id=END_OF_TEXT, eos_token_id=END_OF_TEXT)
    return hf_config
