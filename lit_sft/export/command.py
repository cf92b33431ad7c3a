"""`python -m lit_sft.export`: a run's serving folder, GGUF and Hub upload from the command line."""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lit_sft.checkpoints import load_model
from lit_sft.errors import InvalidInput, UserError, one_line
from lit_sft.export import card, hf
from lit_sft.export.gguf import GGUF_TYPES, export_gguf
from lit_sft.export.publish import push_folder
from lit_sft.prompts import PROMPT_STYLES, prompt_style
from lit_sft.run_dir import RunDir


def parser() -> argparse.ArgumentParser:
    from lit_sft.export import __doc__ as doc

    p = argparse.ArgumentParser(prog="python -m lit_sft.export", description=doc)
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
            print(f"wrote {hf.export_adapters(RunDir(args.source), out)}", file=sys.stderr)
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
    run, weights = hf.source_of(args.source)
    config = _config(run, args.model)
    style_name = args.prompt or (run is not None and config["prompt"]["name"]) or None
    style = prompt_style(style_name) if style_name else None
    model = load_model(hf.model_config(config), weights)
    hf.export_for_serving(model, out, style)
    print(f"exported {weights} to {out}", file=sys.stderr)
    name = args.push_to_hub or (run.path.name if run else weights.stem)
    if run is not None:
        (out / "README.md").write_text(card.model_card(_facts(run, config), name), "utf-8")
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
            f"a weights file outside a run folder needs its size: pass --model {hf.MODEL_SIZES}"
        )
    return saved_config(run.config, run.path)


def _facts(run: RunDir, config: dict[str, Any]) -> card.RunFacts:
    from lit_sft.cli.compose import saved_config

    eval_config_path = run.eval_dir / ".hydra" / "config.yaml"
    eval_config = saved_config(eval_config_path, run.path) if eval_config_path.is_file() else None
    return card.RunFacts(config, run.read_summary(), run.read_eval_summary(), eval_config)
