"""Evaluation: answer a test split (resumably), score the answers, summarise and log the score."""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import tiktoken
import torch
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from lit_sft.data import InstructionDataModule
from lit_sft.files import write_json_atomic
from lit_sft.generation import END_OF_TEXT, generate
from lit_sft.judge import Judge, score_entries
from lit_sft.model import GPT, GPTConfig
from lit_sft.prompts import PromptStyle, prompt_style
from lit_sft.weights import WEIGHTS_FILENAME, load_weights

RESPONSES_FILE = "instruction-data-with-response.json"
SCORES_FILE = "scores.jsonl"
SUMMARY_FILE = "eval-summary.json"
SCORERS = ("judge", "exact_match")
CI95_METHOD = "mean ± 1.96·std/√n (normal approximation), clipped to [0, 100]"

Entry = dict[str, str]


def run_weights(run_dir: Path) -> Path:
    """The weights a training run left: its exported model.safetensors, else its last checkpoint."""
    for candidate in (run_dir / WEIGHTS_FILENAME, run_dir / "checkpoints" / "last.ckpt"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"{run_dir} holds neither {WEIGHTS_FILENAME} nor checkpoints/last.ckpt; "
        "pass weights=<file> to name the weights"
    )


def load_checkpoint_weights(model: GPT, path: Path) -> None:
    """Loads the model of a Lightning checkpoint of `InstructionModule` into `model`, strictly."""
    # weights_only refuses pickled code; a Lightning checkpoint holds only tensors and plain data.
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    prefix = "model."
    state = {
        name.removeprefix(prefix): tensor
        for name, tensor in checkpoint["state_dict"].items()
        if name.startswith(prefix)
    }
    model.load_state_dict(state)


def load_model(model_config: dict[str, Any], weights: Path | None, device: str = "cpu") -> GPT:
    """A GPT in eval mode on `device` with `weights` (safetensors, state dict or .ckpt) loaded."""
    model = GPT(GPTConfig(**model_config))
    if weights is not None and weights.suffix == ".ckpt":
        load_checkpoint_weights(model, weights)
    elif weights is not None:
        load_weights(model, weights)
    return model.to(device).eval()


def rebuild_test_split(datamodule: InstructionDataModule) -> list[Entry]:
    """The test split exactly as training built it: same file or synthetic seed, same fractions."""
    datamodule.prepare_data()
    datamodule.setup("test")
    return datamodule.splits["test"]


def read_responses(path: Path, entries: Sequence[Entry]) -> list[dict[str, Any]]:
    """The answers to the first of `entries` that a previous run left in `path`.

    A longer file (an earlier run without `limit`) is fine; one for other entries is an error.
    """
    if not path.is_file():
        return []
    answered = json.loads(path.read_text(encoding="utf-8"))[: len(entries)]
    for index, record in enumerate(answered):
        unanswered = {k: v for k, v in record.items() if k != "model_response"}
        if unanswered != entries[index] or "model_response" not in record:
            raise ValueError(
                f"{path} does not match this test split (entry {index} differs); "
                "delete it to answer the test split again"
            )
    return answered


def generate_responses(
    model: GPT,
    entries: Sequence[Entry],
    style: PromptStyle,
    path: Path,
    *,
    batch_size: int = 8,
    max_new_tokens: int = 256,
    temperature: float = 0.0,
    top_k: int | None = None,
    seed: int = 123,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """`entries` with a `model_response` each, rewriting `path` after every batch.

    Entries already answered in `path` (a stopped earlier run) are kept, not generated again.
    """
    tokenizer = tiktoken.get_encoding("gpt2")
    answered = read_responses(path, entries)
    generator = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    with tqdm(
        total=len(entries),
        initial=len(answered),
        desc="answering",
        unit="entry",
        disable=not progress,
    ) as bar:
        for start in range(len(answered), len(entries), batch_size):
            batch = entries[start : start + batch_size]
            prompts = [
                tokenizer.encode(style.prompt(e), allowed_special={"<|endoftext|>"}) for e in batch
            ]
            answers = generate(
                model,
                prompts,
                max_new_tokens=max_new_tokens,
                eos_id=END_OF_TEXT,
                temperature=temperature,
                top_k=top_k,
                generator=generator,
            )
            for entry, tokens in zip(batch, answers, strict=True):
                response = style.extract_response(tokenizer.decode(tokens))
                answered.append({**entry, "model_response": response})
            write_json_atomic(path, answered)
            bar.update(len(batch))
    return answered


def exact_match_scores(entries: Sequence[dict[str, Any]]) -> list[float]:
    """100 for each answer equal to its reference once both are stripped, else 0."""
    return [100.0 if e["model_response"].strip() == e["output"].strip() else 0.0 for e in entries]


def judge_scores(
    entries: Sequence[dict[str, Any]], judge: Judge, path: Path, *, progress: bool = True
) -> list[float | None]:
    """The judge's score of each answer (None where it failed), appended to `path` as it comes."""
    # The judge reads every answer's instruction in one format, so the prompt style a run was
    # trained with changes its answers, not what the judge is asked.
    alpaca = prompt_style("alpaca")
    judged = [{**e, "instruction_text": alpaca.instruction_text(e)} for e in entries]
    results = score_entries(judged, judge, path, progress=progress)
    return [results[i].score for i in range(len(entries))]


def summarize(
    metric: str, scores: Sequence[float | None], val_loss: float | None
) -> dict[str, Any]:
    """Counts, mean, sample std and 95 % interval (see CI95_METHOD) of the scores that exist."""
    scored = [s for s in scores if s is not None]
    mean = statistics.fmean(scored) if scored else None
    std = statistics.stdev(scored) if len(scored) > 1 else None
    ci95 = None
    if mean is not None and std is not None:
        half = 1.96 * std / math.sqrt(len(scored))
        # Scores live in [0, 100]; the normal approximation can reach past either end.
        ci95 = [max(0.0, mean - half), min(100.0, mean + half)]
    return {
        "metric": metric,
        "entries": len(scores),
        "scored": len(scored),
        "failures": len(scores) - len(scored),
        "mean": mean,
        "std": std,
        "ci95": ci95,
        "ci95_method": CI95_METHOD,
        "val_loss": val_loss,
    }


def read_run_summary(run_dir: Path) -> dict[str, Any]:
    """The run's summary.json, or {} when the run wrote none."""
    path = run_dir / "summary.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def format_summary(summary: dict[str, Any]) -> str:
    """The summary as a short two-column table."""

    def number(value: float | None, spec: str = ".2f") -> str:
        return "-" if value is None else format(value, spec)

    ci = summary["ci95"]
    rows = [
        ("metric", summary["metric"]),
        ("entries", str(summary["entries"])),
        ("scored", str(summary["scored"])),
        ("failures", str(summary["failures"])),
        ("mean", number(summary["mean"])),
        ("std", number(summary["std"])),
        ("ci95", f"[{ci[0]:.2f}, {ci[1]:.2f}]  ({summary['ci95_method']})" if ci else "-"),
        ("val_loss", number(summary["val_loss"], ".4f")),
    ]
    return "\n".join(f"{name:<10}{value}" for name, value in rows)


def log_summary(summary: dict[str, Any], log_dir: Path, step: int = 0) -> None:
    """Adds `eval/<metric>`, its interval and the counts as scalars to the events in `log_dir`."""
    metric = summary["metric"]
    scalars = {
        f"eval/{metric}": summary["mean"],
        f"eval/{metric}_ci95_low": summary["ci95"][0] if summary["ci95"] else None,
        f"eval/{metric}_ci95_high": summary["ci95"][1] if summary["ci95"] else None,
        "eval/scored": summary["scored"],
        "eval/failures": summary["failures"],
    }
    with SummaryWriter(log_dir=str(log_dir)) as writer:
        for tag, value in scalars.items():
            if value is not None:
                writer.add_scalar(tag, value, step)
