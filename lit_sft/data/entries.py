"""Datasets as lists of entries: read (JSON or JSON Lines, file or URL), validate, split."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from lit_sft.hub import is_remote, local_copy

Entry = dict[str, str]
SFT_FIELDS = ("instruction", "input", "output")


def parse_entries(text: str, source: str) -> list:
    """The entries of a JSON list or of JSON Lines text."""
    if not text.strip():
        raise ValueError(f"{source}: the file is empty")
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        data = []
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    data.append(json.loads(line))
                except json.JSONDecodeError as error:
                    raise ValueError(
                        f"{source}: neither a JSON list nor JSON Lines (line {number}: {error.msg})"
                    ) from None
    if not isinstance(data, list):
        raise ValueError(f"{source}: expected a list of entries, got a JSON {type(data).__name__}")
    return data


def validate_entries(
    entries: Sequence, source: str, fields: Sequence[str] = SFT_FIELDS
) -> list[Entry]:
    """The entries with `input` defaulted to "", after checking each of `fields` of each entry."""
    if not entries:
        raise ValueError(f"{source}: no entries")
    valid = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise ValueError(f"{source}: entry {index} is a {type(entry).__name__}, not an object")
        for field in fields:
            if field not in entry:
                if field == "input":
                    continue
                raise ValueError(f"{source}: entry {index} has no field {field!r}")
            if not isinstance(entry[field], str):
                raise ValueError(
                    f"{source}: entry {index} field {field!r} must be a string, "
                    f"got {type(entry[field]).__name__}"
                )
        valid.append({**entry, "input": entry.get("input", "")})
    return valid


def load_entries(
    path: str, cache_dir: str | Path | None = None, fields: Sequence[str] = SFT_FIELDS
) -> list[Entry]:
    """The validated entries of a local JSON/JSONL file or of an http(s) URL."""
    local = local_copy(path, cache_dir) if is_remote(path) else Path(path)
    if not local.is_file():
        raise FileNotFoundError(f"dataset file {path} does not exist")
    return validate_entries(parse_entries(local.read_text(encoding="utf-8"), path), path, fields)


def split_entries(
    entries: Sequence[Entry], train_fraction: float = 0.85, test_fraction: float = 0.10
) -> tuple[list[Entry], list[Entry], list[Entry]]:
    """Train, test and validation entries, in file order (as the book splits them)."""
    train_end = int(len(entries) * train_fraction)
    test_end = train_end + int(len(entries) * test_fraction)
    return list(entries[:train_end]), list(entries[train_end:test_end]), list(entries[test_end:])
