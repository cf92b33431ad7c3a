"""GGUF, llama.cpp's file format, written with llama.cpp's own writer (the `gguf` package).

The model is llama.cpp's `gpt2` architecture, tensor for tensor: GPT-2's byte-level BPE vocabulary
and merges as its tokenizer, the prompt style as its chat template. 2-D weights are stored in the
chosen type (f32, f16, or q8_0: 8-bit blocks of 32 with an f16 scale); LayerNorms and biases stay
f32, as llama.cpp's own converter keeps them. The Ollama `Modelfile` beside it carries the style's
prompt as a Go template and its stop strings.
"""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import numpy as np

from lit_sft.errors import InvalidInput
from lit_sft.export.chat_template import chat_template
from lit_sft.model import GPT
from lit_sft.prompts import PromptStyle
from lit_sft.serving.render import EOS_TEXT, system_turn
from lit_sft.tokenizer import END_OF_TEXT, gpt2_bpe_files

GGUF_TYPES = {
    "f32": gguf.GGMLQuantizationType.F32,
    "f16": gguf.GGMLQuantizationType.F16,
    "q8_0": gguf.GGMLQuantizationType.Q8_0,
}
ARCH = "gpt2"
LAYER_NORM_EPS = 1e-5  # lit_sft's LayerNorms'
# lit_sft's names -> llama.cpp's gpt2 names, per block and for the whole model.
BLOCK_TENSORS = {
    "norm1": "attn_norm",
    "attn.qkv": "attn_qkv",
    "attn.proj": "attn_output",
    "norm2": "ffn_norm",
    "mlp.fc": "ffn_up",
    "mlp.proj": "ffn_down",
}
MODEL_TENSORS = {
    "tok_emb": "token_embd",
    "pos_emb": "position_embd",
    "final_norm": "output_norm",
    "out_head": "output",
}


def gguf_name(name: str) -> str:
    """llama.cpp's name of one of lit_sft's tensors (`blocks.3.attn.qkv.weight` -> blk.3...)."""
    module, _, kind = name.rpartition(".")
    if module.startswith("blocks."):
        _, layer, rest = module.split(".", 2)
        return f"blk.{layer}.{BLOCK_TENSORS[rest]}.{kind}"
    return f"{MODEL_TENSORS[module]}.{kind}"


def gguf_tensors(model: GPT) -> dict[str, np.ndarray]:
    """Every tensor llama.cpp's gpt2 loads, in float32, under its GGUF name."""
    tensors = {
        gguf_name(n): t.detach().float().cpu().numpy() for n, t in model.state_dict().items()
    }
    for layer in range(model.config.n_layers):  # llama.cpp's gpt2 needs the qkv bias
        name = f"blk.{layer}.attn_qkv.bias"
        tensors.setdefault(name, np.zeros(3 * model.config.emb_dim, dtype=np.float32))
    return tensors


def write_gguf(model: GPT, path: Path, kind: str, style: PromptStyle | None, name: str) -> Path:
    """Writes `model` as a GGUF file of type `kind` (f32, f16, q8_0) to `path`."""
    if kind not in GGUF_TYPES:
        raise InvalidInput(f"--gguf-type {kind}: choose one of {', '.join(GGUF_TYPES)}")
    config = model.config
    writer = gguf.GGUFWriter(path, ARCH)
    writer.add_name(name)
    writer.add_context_length(config.context_length)
    writer.add_embedding_length(config.emb_dim)
    writer.add_feed_forward_length(4 * config.emb_dim)
    writer.add_block_count(config.n_layers)
    writer.add_head_count(config.n_heads)
    writer.add_layer_norm_eps(LAYER_NORM_EPS)
    writer.add_file_type(
        {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16}.get(
            kind, gguf.LlamaFileType.MOSTLY_Q8_0
        )
    )
    _add_tokenizer(writer, config.vocab_size, style)
    for tensor_name, data in gguf_tensors(model).items():
        _add_tensor(writer, tensor_name, data, kind)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _add_tensor(writer: gguf.GGUFWriter, name: str, data: np.ndarray, kind: str) -> None:
    if data.ndim == 1 or kind == "f32":
        writer.add_tensor(name, data)
    elif kind == "f16":
        writer.add_tensor(name, data.astype(np.float16))
    else:
        quantized = gguf.quants.quantize(data, GGUF_TYPES[kind])
        writer.add_tensor(name, quantized, raw_dtype=GGUF_TYPES[kind])


def _add_tokenizer(writer: gguf.GGUFWriter, vocab_size: int, style: PromptStyle | None) -> None:
    """GPT-2's vocabulary, merges and end-of-text; ids past them as unused tokens."""
    if vocab_size <= END_OF_TEXT:  # not GPT-2's vocabulary (a test model): no tokenizer to add
        return
    encoder_json, merges = gpt2_bpe_files()
    encoder = json.loads(encoder_json)
    tokens = sorted(encoder, key=encoder.__getitem__)
    types = [gguf.TokenType.NORMAL] * len(tokens)
    types[END_OF_TEXT] = gguf.TokenType.CONTROL
    padding = vocab_size - len(tokens)
    tokens += [f"<|unused{i}|>" for i in range(padding)]
    types += [gguf.TokenType.UNUSED] * padding
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    lines = merges.decode("utf-8").splitlines()
    writer.add_token_merges([line for line in lines if line and not line.startswith("#version")])
    writer.add_bos_token_id(END_OF_TEXT)
    writer.add_eos_token_id(END_OF_TEXT)
    writer.add_add_bos_token(False)
    if style is not None:
        writer.add_chat_template(chat_template(style))


def modelfile(style: PromptStyle, gguf_file: str, context_length: int) -> str:
    """An Ollama Modelfile: the GGUF file, the style's prompt as a Go template, its stops."""
    system = system_turn(style, "{{ .System }}")
    template = (
        (f"{{{{ if .System }}}}{system}{{{{ end }}}}" if system else "")
        + style.instruction_prefix
        + "{{ .Prompt }}"
        + style.response_header
        + "{{ .Response }}"
    )
    # The end of text, and the next turn's start in case the model runs on into one.
    next_turn = style.instruction_prefix.strip().splitlines()[0]
    lines = [
        f"FROM ./{gguf_file}",
        f'TEMPLATE """{template}"""',
        *(f"PARAMETER stop {json.dumps(stop)}" for stop in (EOS_TEXT, next_turn)),
        "PARAMETER temperature 0",
        f"PARAMETER num_ctx {context_length}",
    ]
    return "\n".join(lines) + "\n"


def export_gguf(
    model: GPT, out_dir: Path, kind: str, style: PromptStyle | None, name: str
) -> list[Path]:
    """`model-<kind>.gguf` and (with a prompt style) an Ollama `Modelfile` in `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = write_gguf(model, out_dir / f"model-{kind}.gguf", kind, style, name)
    if style is None:
        return [path]
    (out_dir / "Modelfile").write_text(
        modelfile(style, path.name, model.config.context_length), encoding="utf-8"
    )
    return [path, out_dir / "Modelfile"]
