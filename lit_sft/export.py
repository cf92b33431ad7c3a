"""A folder that serving tools load as it is: transformers, vLLM, lm-evaluation-harness.

`python -m lit_sft.export <run folder or weights file> <out_dir>` writes, for any checkpoint
(model.safetensors, last.ckpt, best-step*.ckpt), the Hugging Face GPT-2 layout: model.safetensors
and config.json (`checkpoints.export_hf`), generation_config.json, and GPT-2's tokenizer files
(vocab.json, merges.txt, tokenizer_config.json, special_tokens_map.json), offline. A LoRA run's
folder holds its weights with the adapters merged; `--adapters-only` writes its adapters alone
(adapter_model.safetensors + adapter_config.json naming rank, alpha, targets and base weights).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from hydra import compose, initialize_config_dir
from hydra.errors import MissingConfigException
from omegaconf import OmegaConf

from lit_sft.checkpoints import export_hf, load_model
from lit_sft.lora import LoRAConfig, save_adapters
from lit_sft.model import GPT
from lit_sft.run_dir import RunDir
from lit_sft.tokenizer import END_OF_TEXT, gpt2_bpe_files

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
_EOS = "<|endoftext|>"


def export_for_serving(model: GPT, out_dir: str | Path) -> None:
    """Weights, model and generation configs, and the GPT-2 tokenizer files in `out_dir`."""
    out = Path(out_dir)
    export_hf(model, out)
    if model.config.vocab_size <= END_OF_TEXT:  # not GPT-2's vocabulary: no tokenizer to add
        return
    # Greedy until <|endoftext|>, as lit_sft generates; GPT-2 has no padding token, so its
    # end-of-text pads batches, as in training.
    generation = {"bos_token_id": END_OF_TEXT, "eos_token_id": END_OF_TEXT}
    generation.update(pad_token_id=END_OF_TEXT, do_sample=False)
    _write_json(out / "generation_config.json", generation)
    encoder, merges = gpt2_bpe_files()
    (out / "vocab.json").write_bytes(encoder)
    (out / "merges.txt").write_bytes(merges)
    special = {"bos_token": _EOS, "eos_token": _EOS, "unk_token": _EOS}
    _write_json(out / "special_tokens_map.json", special)
    tokenizer_config = {
        "tokenizer_class": "GPT2Tokenizer",
        "model_max_length": model.config.context_length,
        "add_prefix_space": False,
        # Decoding must give back the text exactly, as tiktoken does.
        "clean_up_tokenization_spaces": False,
        **special,
    }
    _write_json(out / "tokenizer_config.json", tokenizer_config)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def source_of(path: Path) -> tuple[RunDir | None, Path]:
    """The run folder a path belongs to (None for a bare file) and the weights file to export."""
    if path.is_dir():
        run = RunDir(path)
        if not run.is_run():
            raise FileNotFoundError(f"{path} is not a run folder (it has no .hydra/config.yaml)")
        return run, run.trained_weights()
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; pass a run folder or a weights file")
    # model.safetensors sits in the run folder, checkpoints in its checkpoints/ folder.
    for folder in (path.parent, path.parent.parent):
        if RunDir(folder).is_run():
            return RunDir(folder), path
    return None, path


def model_config(run: RunDir | None, model: str | None) -> dict[str, Any]:
    """GPTConfig fields of the run's model, or of the model config named `model`."""
    if model is not None:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(config_name="config", overrides=[f"model={model}"])
    elif run is not None:
        cfg = OmegaConf.load(run.config)
    else:
        raise ValueError(
            "a weights file outside a run folder needs its size: pass --model gpt2-small "
            "(or gpt2-medium, gpt2-large, gpt2-xl, gpt2-tiny)"
        )
    # Run folders written before `arch` carried it keep tie_weights beside `arch`.
    arch = OmegaConf.to_container(cfg.model.arch, resolve=True)
    return {"tie_weights": cfg.model.tie_weights, **arch}


def export_adapters(run: RunDir, out_dir: Path) -> Path:
    """The adapters of a LoRA run's last checkpoint, written to `out_dir`."""
    if not run.last_checkpoint.is_file():
        raise FileNotFoundError(f"{run.path} has no checkpoints/last.ckpt to take adapters from")
    # weights_only refuses pickled code; the checkpoint holds only tensors and plain data.
    checkpoint = torch.load(run.last_checkpoint, map_location="cpu", weights_only=True)
    if "adapter" not in checkpoint:
        raise ValueError(
            f"{run.path} was not trained with adapter=lora: it has no adapters to export; "
            "drop --adapters-only to export the whole model"
        )
    tensors = {k.removeprefix("model."): t for k, t in checkpoint["state_dict"].items()}
    config = LoRAConfig(**checkpoint["adapter"])
    return save_adapters(tensors, config, checkpoint.get("base_weights"), out_dir)


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: `python -m lit_sft.export <run_dir or weights> <out_dir> [--model NAME]`."""
    parser = argparse.ArgumentParser(prog="python -m lit_sft.export", description=__doc__)
    parser.add_argument("source", type=Path, help="a run folder, or a weights file")
    parser.add_argument("out_dir", type=Path, help="the folder to write (created if needed)")
    parser.add_argument(
        "--model", help="the model config of a file outside a run folder, e.g. gpt2-small"
    )
    parser.add_argument("--adapters-only", action="store_true", help="a LoRA run's adapters alone")
    args = parser.parse_args(argv)
    try:
        if args.adapters_only:
            print(f"wrote {export_adapters(RunDir(args.source), args.out_dir)}", file=sys.stderr)
            return
        run, weights = source_of(args.source)
        model = load_model(model_config(run if args.model is None else None, args.model), weights)
    except (FileNotFoundError, ValueError, MissingConfigException) as error:  # the user's names
        parser.exit(2, f"error: {error}\n")
    export_for_serving(model, args.out_dir)
    print(f"exported {weights} to {args.out_dir}", file=sys.stderr)


if __name__ == "__main__":
    main()
