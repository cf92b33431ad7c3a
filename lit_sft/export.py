"""Export a trained run: `python -m lit_sft.export <run_dir> <out_dir> [--adapters-only]`.

By default the run's weights in Hugging Face GPT-2 layout (a LoRA run's with its adapters merged,
as training exported them); `--adapters-only` writes a LoRA run's adapters alone
(adapter_model.safetensors + adapter_config.json naming rank, alpha, targets and base weights).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from lit_sft.lora import LoRAConfig, save_adapters
from lit_sft.run_dir import RunDir


def export_adapters(run_dir: RunDir, out_dir: Path) -> Path:
    """The adapters of a LoRA run's last checkpoint, written to `out_dir`."""
    if not run_dir.last_checkpoint.is_file():
        raise FileNotFoundError(
            f"{run_dir.path} has no checkpoints/last.ckpt to take adapters from"
        )
    # weights_only refuses pickled code; the checkpoint holds only tensors and plain data.
    checkpoint = torch.load(run_dir.last_checkpoint, map_location="cpu", weights_only=True)
    if "adapter" not in checkpoint:
        raise ValueError(
            f"{run_dir.path} was not trained with adapter=lora: it has no adapters to export; "
            "drop --adapters-only to export the whole model"
        )
    tensors = {k.removeprefix("model."): t for k, t in checkpoint["state_dict"].items()}
    config = LoRAConfig(**checkpoint["adapter"])
    return save_adapters(tensors, config, checkpoint.get("base_weights"), out_dir)


def export_model(run_dir: RunDir, out_dir: Path) -> Path:
    """The run's exported weights and config.json (Hugging Face GPT-2 layout), copied."""
    for path in (run_dir.weights, run_dir.hf_config):
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist; was the run trained to the end?")
    out_dir.mkdir(parents=True, exist_ok=True)
    for path in (run_dir.weights, run_dir.hf_config):
        shutil.copy2(path, out_dir / path.name)
    return out_dir


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lit_sft.export", description=__doc__)
    parser.add_argument("run_dir", type=Path, help="a training run folder")
    parser.add_argument("out_dir", type=Path, help="where to write the files")
    parser.add_argument("--adapters-only", action="store_true", help="a LoRA run's adapters alone")
    args = parser.parse_args(argv)
    write = export_adapters if args.adapters_only else export_model
    try:
        out = write(RunDir(args.run_dir), args.out_dir)
    except (ValueError, FileNotFoundError) as error:
        parser.exit(1, f"python -m lit_sft.export: {error}\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
