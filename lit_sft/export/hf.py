"""The Hugging Face folder: weights, configs, GPT-2's tokenizer files and the chat template."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from lit_sft.checkpoints import export_hf
from lit_sft.errors import InvalidInput, MissingFile
from lit_sft.export.chat_template import chat_template
from lit_sft.lora import LoRAConfig, save_adapters
from lit_sft.model import GPT
from lit_sft.prompts import PromptStyle
from lit_sft.run_dir import RunDir
from lit_sft.tokenizer import END_OF_TEXT, gpt2_bpe_files

EOS = "<|endoftext|>"
MODEL_SIZES = "gpt2-small (or gpt2-medium, gpt2-large, gpt2-xl, gpt2-tiny)"


def export_for_serving(model: GPT, out_dir: str | Path, style: PromptStyle | None = None) -> None:
    """Weights, model and generation configs, and the GPT-2 tokenizer files in `out_dir`.

    With the run's prompt `style`, tokenizer_config.json carries it as a chat template.
    """
    out = Path(out_dir)
    export_hf(model, out)
    if model.config.vocab_size <= END_OF_TEXT:  # not GPT-2's vocabulary: no tokenizer to add
        return
    # Greedy until <|endoftext|>, as lit_sft generates; GPT-2 has no padding token, so its
    # end-of-text pads batches, as in training.
    generation = {"bos_token_id": END_OF_TEXT, "eos_token_id": END_OF_TEXT}
    generation.update(pad_token_id=END_OF_TEXT, do_sample=False)
    write_json(out / "generation_config.json", generation)
    encoder, merges = gpt2_bpe_files()
    (out / "vocab.json").write_bytes(encoder)
    (out / "merges.txt").write_bytes(merges)
    special = {"bos_token": EOS, "eos_token": EOS, "unk_token": EOS}
    write_json(out / "special_tokens_map.json", special)
    tokenizer_config: dict[str, Any] = {
        "tokenizer_class": "GPT2Tokenizer",
        "model_max_length": model.config.context_length,
        "add_prefix_space": False,
        # Decoding must give back the text exactly, as tiktoken does.
        "clean_up_tokenization_spaces": False,
        **special,
    }
    if style is not None:
        tokenizer_config["chat_template"] = chat_template(style)
    write_json(out / "tokenizer_config.json", tokenizer_config)


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def source_of(path: Path) -> tuple[RunDir | None, Path]:
    """The run folder a path belongs to (None for a bare file) and the weights file to export."""
    if path.is_dir():
        run = RunDir(path)
        if not run.is_run():
            raise MissingFile(f"{path} is not a run folder (it has no .hydra/config.yaml)")
        return run, run.trained_weights()
    if not path.is_file():
        raise MissingFile(f"{path} does not exist; pass a run folder or a weights file")
    # model.safetensors sits in the run folder, checkpoints in its checkpoints/ folder.
    for folder in (path.parent, path.parent.parent):
        if RunDir(folder).is_run():
            return RunDir(folder), path
    return None, path


def model_config(config: dict[str, Any]) -> dict[str, Any]:
    """GPTConfig fields of the model a (run's, resolved) config names."""
    # Run folders written before `arch` carried it keep tie_weights beside `arch`.
    return {"tie_weights": config["model"]["tie_weights"], **config["model"]["arch"]}


def export_adapters(run: RunDir, out_dir: Path) -> Path:
    """The adapters of a LoRA run's last checkpoint, written to `out_dir`."""
    if not run.last_checkpoint.is_file():
        raise MissingFile(f"{run.path} has no checkpoints/last.ckpt to take adapters from")
    # weights_only refuses pickled code; the checkpoint holds only tensors and plain data.
    checkpoint = torch.load(run.last_checkpoint, map_location="cpu", weights_only=True)
    if "adapter" not in checkpoint:
        raise InvalidInput(
            f"{run.path} was not trained with adapter=lora: it has no adapters to export; "
            "drop --adapters-only to export the whole model"
        )
    tensors = {k.removeprefix("model."): t for k, t in checkpoint["state_dict"].items()}
    config = LoRAConfig(**checkpoint["adapter"])
    return save_adapters(tensors, config, checkpoint.get("base_weights"), out_dir)
