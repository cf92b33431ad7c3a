"""`python -m lit_sft.export`: a run as others use it, from the command line.

`python -m lit_sft.export <run folder or weights file> <out_dir>` writes, for any checkpoint
(model.safetensors, last.ckpt, best-step*.ckpt), the Hugging Face GPT-2 layout: model.safetensors
and config.json, generation_config.json, GPT-2's tokenizer files with the run's prompt style as a
chat template, and a model card (README.md), offline. A LoRA run's folder holds its weights with
the adapters merged; `--adapters-only` writes its adapters alone. `--gguf [--gguf-type
f32|f16|q8_0]` adds model-<type>.gguf and an Ollama Modelfile; `--push-to-hub OWNER/NAME
[--private]` uploads the folder (without <out_dir>: from a temporary one).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lit_sft.checkpoints import load_model
from lit_sft.errors import InvalidInput, UserError, one_line
from lit_sft.export.card import RunFacts, model_card
from lit_sft.export.gguf import GGUF_TYPES, export_gguf
from lit_sft.export.hf import (
    MODEL_SIZES,
    export_adapters,
    export_for_serving,
    model_config,
    source_of,
)
from lit_sft.export.publish import push_folder
from lit_sft.prompts import PROMPT_STYLES, prompt_style
from lit_sft.run_dir import RunDir


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m lit_sft.export", description=__doc__)
    p.add_argument("source", type=Path, help="a run folder, or a weights file")
    p.add_argument("out_dir", type=Path, nargs="?", help="the folder to write (created if needed)")
    p.add_argument(
        "--model", help="the model config of a file outside a run folder, e.g. gpt2-small"
    )
    p.add_argument("--prompt", choices=sorted(PROMPT_STYLES), help="a bare file's prompt style")
    p.add_argument("--adapters-only", action="store_true", help="a LoRA run's adapters alone")
    p.add_argument("--gguf", action="store_true", help="also a GGUF file and an Ollama Modelfile")
    p.add_argument("--gguf-type", choices=list(GGUF_TYPES), default="f16", help="(default f16)")
    p.add_argument("--push-to-hub", metavar="OWNER/NAME", help="upload the folder to the Hub")
    p.add_argument("--private", action="store_true", help="a private Hub repository")
    return p


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: `python -m lit_sft.export <run_dir or weights> <out_dir> [options]`."""
    p = parser()
    args = p.parse_args(argv)
    if args.out_dir is None and args.push_to_hub is None:
        p.error("give <out_dir>, --push-to-hub OWNER/NAME, or both")
    try:
        if args.adapters_only:
            out = args.out_dir or Path(tempfile.mkdtemp(prefix="lit_sft-adapters-"))
            print(f"wrote {export_adapters(RunDir(args.source), out)}", file=sys.stderr)
            _push(out, args)
            return
        if args.out_dir is not None:
            export(args, args.out_dir)
        else:
            with tempfile.TemporaryDirectory(prefix="lit_sft-export-") as folder:
                export(args, Path(folder))
    except UserError as error:  # the user's names, files or token
        p.exit(2, f"error: {one_line(error)}\n")


def export(args: argparse.Namespace, out: Path) -> None:
    """The serving folder (+ card, GGUF) of `args.source` in `out`, then the upload if asked."""
    run, weights = source_of(args.source)
    config = _config(run, args.model)
    style_name = args.prompt or (run is not None and config["prompt"]["name"]) or None
    style = prompt_style(style_name) if style_name else None
    model = load_model(model_config(config), weights)
    export_for_serving(model, out, style)
    print(f"exported {weights} to {out}", file=sys.stderr)
    name = args.push_to_hub or (run.path.name if run else weights.stem)
    if run is not None:
        (out / "README.md").write_text(model_card(_facts(run, config), name), "utf-8")
    if args.gguf:
        for path in export_gguf(model, out, args.gguf_type, style, name):
            print(f"wrote {path}", file=sys.stderr)
    _push(out, args)


def _push(out: Path, args: argparse.Namespace) -> None:
    if args.push_to_hub is not None:
        url = push_folder(out, args.push_to_hub, private=args.private)
        print(f"uploaded {out} to {args.push_to_hub}: {url}", file=sys.stderr)


def _config(run: RunDir | None, model: str | None) -> dict[str, Any]:
    """The run's config, or the training config of `--model` (Hydra composes it, lazily)."""
    from lit_sft.cli.compose import named_model_config, saved_config

    if model is not None:
        return named_model_config(model)
    if run is None:
        raise InvalidInput(
            f"a weights file outside a run folder needs its size: pass --model {MODEL_SIZES}"
        )
    return saved_config(run.config, run.path)


def _facts(run: RunDir, config: dict[str, Any]) -> RunFacts:
    from lit_sft.cli.compose import saved_config

    eval_config_path = run.eval_dir / ".hydra" / "config.yaml"
    # Only its judge: older evaluations' summaries did not name it.
    eval_config = (
        saved_config(eval_config_path, run.path, keys=["judge"])
        if eval_config_path.is_file()
        else None
    )
    return RunFacts(config, run.read_summary(), run.read_eval_summary(), eval_config)
