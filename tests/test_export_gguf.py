"""GGUF: the tensors round-trip through llama.cpp's reader; llama.cpp generates lit_sft's tokens."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from lit_sft.checkpoints import _hf_name_map, export_hf
from lit_sft.export.gguf import export_gguf, gguf_name, modelfile
from lit_sft.generation import generate
from lit_sft.model import GPT, GPTConfig
from lit_sft.prompts import prompt_style
from lit_sft.tokenizer import Tokenizer
from tests.helpers.config import REPO, TINY_RUN, compose_config, save_run_config
from tests.helpers.gpt2 import randomize

CONFIG = dict(vocab_size=50257, context_length=64, emb_dim=32, n_layers=2, n_heads=2)
SMALL_VOCAB = 512  # no tokenizer to write (or read back: 50257 tokens take the reader seconds)


def tiny_gpt(vocab_size: int = 50257) -> GPT:
    model = GPT(GPTConfig(**{**CONFIG, "vocab_size": vocab_size})).eval()
    randomize(model, 3)
    return model


def gguf_state(reader: gguf.GGUFReader) -> dict[str, torch.Tensor]:
    """The tensors of a GGUF file in float32 (dequantized by gguf), in lit_sft's shapes."""
    tensors = {}
    for tensor in reader.tensors:
        data = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
        shape = tuple(int(n) for n in reversed(tensor.shape.tolist()))
        tensors[tensor.name] = torch.from_numpy(np.array(data, dtype=np.float32).reshape(shape))
    return tensors


def field(reader: gguf.GGUFReader, key: str) -> object:
    return reader.fields[key].contents()


@pytest.mark.parametrize("kind", ["f32", "f16", "q8_0"])
def test_tensors_round_trip_through_the_gguf_reader(tmp_path: Path, kind: str) -> None:
    model = tiny_gpt(SMALL_VOCAB)
    (path,) = export_gguf(model, tmp_path, kind, None, "tiny")
    assert path.name == f"model-{kind}.gguf"
    reader = gguf.GGUFReader(path)
    read = gguf_state(reader)
    ours = {gguf_name(n): t for n, t in model.state_dict().items()}
    assert set(read) == set(ours)
    for name, tensor in ours.items():
        back = read[name]
        assert back.shape == tensor.shape, name
        if kind == "f32" or tensor.dim() == 1:  # LayerNorms and biases stay f32
            assert torch.equal(back, tensor), name
        elif kind == "f16":
            assert torch.equal(back, tensor.half().float()), name
        else:
            # Q8_0: blocks of 32 values, each an int8 times the block's max |value| / 127 (in f16).
            blocks = tensor.reshape(-1, 32)
            scale = blocks.abs().amax(dim=1, keepdim=True) / 127
            error = (back.reshape(-1, 32) - blocks).abs()
            # Half a step of rounding, plus the f16 scale's relative error (2^-11) times 127 steps.
            assert bool((error <= scale * (0.5 + 127 * 2**-11) + 1e-7).all()), name
            assert not torch.equal(back, tensor)
    types = {t.name: t.tensor_type.name for t in reader.tensors}
    assert types["blk.0.attn_qkv.weight"] == kind.upper() and types["output_norm.bias"] == "F32"
    assert field(reader, "general.architecture") == "gpt2"
    assert field(reader, "gpt2.context_length") == 64
    assert field(reader, "gpt2.embedding_length") == 32
    assert field(reader, "gpt2.feed_forward_length") == 128
    assert field(reader, "gpt2.block_count") == 2
    assert field(reader, "gpt2.attention.head_count") == 2


def test_gpt2s_tokenizer_and_the_chat_template_are_in_the_file(tmp_path: Path) -> None:
    (path, modelfile_path) = export_gguf(tiny_gpt(), tmp_path, "f16", prompt_style("alpaca"), "t")
    reader = gguf.GGUFReader(path)
    assert field(reader, "tokenizer.ggml.model") == "gpt2"
    assert field(reader, "tokenizer.ggml.eos_token_id") == 50256
    tokens = field(reader, "tokenizer.ggml.tokens")
    assert len(tokens) == 50257 and tokens[50256] == "<|endoftext|>" and tokens[262] == "Ġthe"
    assert field(reader, "tokenizer.ggml.merges")[0] == "Ġ t"
    assert "### Response:" in field(reader, "tokenizer.chat_template")
    assert modelfile_path.read_text().startswith("FROM ./model-f16.gguf\n")


def test_modelfile_carries_the_styles_template_and_stops() -> None:
    assert modelfile(prompt_style("chatml"), "model-f16.gguf", 1024) == (
        "FROM ./model-f16.gguf\n"
        'TEMPLATE """{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}'
        '<|im_start|>user\n{{ .Prompt }}<|im_end|>\n<|im_start|>assistant\n{{ .Response }}"""\n'
        'PARAMETER stop "<|endoftext|>"\n'
        'PARAMETER stop "<|im_start|>user"\n'
        "PARAMETER temperature 0\n"
        "PARAMETER num_ctx 1024\n"
    )
    alpaca = modelfile(prompt_style("alpaca"), "model-q8_0.gguf", 256)
    assert '"""Below is an instruction' in alpaca and "{{ .System }}" not in alpaca
    assert "### Instruction:\n{{ .Prompt }}\n\n### Response:\n{{ .Response }}" in alpaca


def test_the_command_writes_gguf_and_modelfile_for_a_run(tmp_path: Path) -> None:
    cfg = save_run_config(
        compose_config([*TINY_RUN, "prompt=phi3"], tmp_path / "run"), tmp_path / "run"
    )
    arch = OmegaConf.to_container(cfg.model.arch, resolve=True)
    model = GPT(GPTConfig(**arch)).eval()
    export_hf(model, tmp_path / "run")
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "lit_sft.export", str(tmp_path / "run"), str(out)]
        + ["--gguf", "--gguf-type", "q8_0"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert (out / "model-q8_0.gguf").is_file() and (out / "config.json").is_file()
    assert "<|user|>\n{{ .Prompt }}\n<|assistant|>:\n" in (out / "Modelfile").read_text()
    card = (out / "README.md").read_text()
    assert "<|user|>" in card and "license: mit" in card
    assert json.loads((out / "tokenizer_config.json").read_text())["chat_template"]


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is None,
    reason="llama-cpp-python is not installed (pip install llama-cpp-python builds llama.cpp)",
)
def test_llama_cpp_generates_lit_sfts_greedy_tokens(tmp_path: Path) -> None:
    import llama_cpp

    # Weights of std 0.05 (not 0.2): answers that wander over the vocabulary, not one token.
    model = GPT(GPTConfig(**CONFIG)).eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.05)
    (path,) = export_gguf(model, tmp_path, "f32", None, "tiny")
    tokenizer = Tokenizer()
    prompt = tokenizer.encode(prompt_style("alpaca").prompt({"instruction": "Name a colour."}))
    (ours,) = generate(model, [prompt], max_new_tokens=16, eos_id=-1)
    assert len(set(ours)) >= 6
    llm = llama_cpp.Llama(str(path), n_ctx=64, n_threads=1, verbose=False, seed=0)
    assert llm.tokenize(b"Name a colour.", add_bos=False, special=True) == tokenizer.encode(
        "Name a colour."
    )
    theirs = []
    for token in llm.generate(prompt, top_k=1, temp=0.0, reset=True):
        theirs.append(token)
        if len(theirs) == len(ours):
            break
    assert theirs == ours
    assert np.isfinite(llm.scores[: len(prompt)]).all()


def test_tensor_names_are_llama_cpps_for_gpt2s() -> None:
    """Each tensor's GGUF name is the one llama.cpp's converter gives the same Hugging Face one."""
    llama_names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.GPT2, 2)
    for hf_name, (ours, _) in _hf_name_map(2).items():
        prefix = "" if hf_name.startswith("lm_head") else "transformer."
        theirs = llama_names.get_name(prefix + hf_name, try_suffixes=(".weight", ".bias"))
        assert gguf_name(ours) == theirs, hf_name
