"""What a result belongs to: content hashes, settings and the readable folder names they key.

A result's folder name is a readable label and the first `HASH_CHARS` hex digits of the sha256 of
its whole settings (canonical JSON), so two settings share a folder only if they are equal.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

HASH_CHARS = 10


def content_hash(value: Any) -> str:
    """sha256 (hex) of `value` as canonical JSON: sorted keys, no spaces."""
    text = json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def weights_hash(model: torch.nn.Module) -> str:
    """sha256 (hex) of a model's parameters and buffers: names, dtypes, shapes and bytes.

    Of the weights in memory rather than of a file, so the exported model.safetensors and the
    checkpoint it came from, which hold the same numbers, hash alike.
    """
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        tensor = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())  # its buffer, no copy
    return digest.hexdigest()


def label(*parts: object) -> str:
    """The parts joined by '-', each reduced to letters, digits, '.' and '_' (safe as a path)."""
    return "-".join(re.sub(r"[^A-Za-z0-9._]+", "_", str(p)).strip("_") for p in parts)


def result_name(readable: str, settings: Mapping[str, Any]) -> str:
    """`<readable>-<hash of settings>`: a folder name that changes with any setting."""
    return f"{readable}-{content_hash(settings)[:HASH_CHARS]}"


@dataclass(frozen=True)
class GenerationSettings:
    """How evaluate generates answers: every setting that changes what is generated."""

    max_new_tokens: int
    temperature: float
    top_k: int | None
    seed: int
    batch_size: int

    def key(self) -> dict[str, Any]:
        """The settings the answers depend on.

        Sampling draws every answer of a batch from one generator, so which entries share a batch
        changes them: `batch_size` counts then. Greedy answers do not depend on it.
        """
        # temperature=1 and temperature=1.0 are one setting.
        settings = asdict(self) | {"temperature": float(self.temperature)}
        if self.temperature <= 0.0:
            del settings["batch_size"]
        return settings

    def readable(self) -> str:
        """`greedy-max256` or `t0.7-k40-seed123-max256`."""
        if self.temperature <= 0.0:
            return label("greedy", f"max{self.max_new_tokens}")
        top_k = [] if self.top_k is None else [f"k{self.top_k}"]
        return label(
            f"t{self.temperature:g}", *top_k, f"seed{self.seed}", f"max{self.max_new_tokens}"
        )


def answers_settings(
    weights_sha256: str, style: str, split: Sequence[Mapping[str, Any]], gen: GenerationSettings
) -> dict[str, Any]:
    """What a model's answers to a test split belong to."""
    return {
        "source": "model",
        "weights_sha256": weights_sha256,
        "prompt_style": style,
        "test_split_sha256": content_hash(list(split)),
        "test_entries": len(split),
        "generation": gen.key(),
    }


def file_answers_settings(
    file_name: str, response_field: str, entries: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """What answers read from a file belong to: their content and the field they came from."""
    return {
        "source": "file",
        "file": file_name,
        "response_field": response_field,
        "entries_sha256": content_hash(list(entries)),
        "entries": len(entries),
    }


def answers_name(settings: Mapping[str, Any], gen: GenerationSettings | None = None) -> str:
    """The folder name of a set of answers."""
    if settings["source"] == "file":
        stem = str(settings["file"]).rsplit("/", 1)[-1].rsplit(".", 1)[0]
        return result_name(label(stem, settings["response_field"]), settings)
    assert gen is not None, "a model's answers are named after their generation settings"
    return result_name(gen.readable(), settings)


def scorer_name(settings: Mapping[str, Any]) -> str:
    """The folder name of a scorer: `exact_match`, or `judge-<api>-<model>-<prompt>-<hash>`."""
    if settings["scorer"] != "judge":
        return label(settings["scorer"])
    return result_name(
        label("judge", settings["api"], settings["model"], settings["prompt"]), settings
    )
