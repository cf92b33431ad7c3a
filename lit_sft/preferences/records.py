"""A keyed JSON Lines store: one record per finished item, appended as it comes, read on resume."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lit_sft.files import open_for_append


def read_records(path: Path) -> dict[int, dict[str, Any]]:
    """The records in `path` by their `index`; later lines win, unreadable lines are skipped."""
    records: dict[int, dict[str, Any]] = {}
    if not path.is_file():
        return records
    for line in path.read_text(encoding="utf-8").splitlines():
        # A run killed mid-write leaves a partial last line; its item is simply done again.
        try:
            record = json.loads(line)
            records[int(record["index"])] = record
        except (ValueError, KeyError, TypeError):
            continue
    return records


def append_records(path: Path, records: Sequence[dict[str, Any]]) -> None:
    """Appends `records` (each with an `index`) in one write, synced to disk."""
    text = "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
    with open_for_append(path) as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
