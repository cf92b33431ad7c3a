"""Files: the cache of dataset URLs (`data/`; Hub files go to the HF cache), atomic writes, and
appends to JSON Lines files that a stopped run may have left half a line in."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import IO, Any

CACHE_ENV = "LIT_SFT_CACHE"


def cache_root() -> Path:
    """`$LIT_SFT_CACHE`, else `$XDG_CACHE_HOME/lit_sft`, else `~/.cache/lit_sft`."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    cache_home = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache_home).expanduser() / "lit_sft"


def write_json_atomic(path: Path, data: Any) -> None:
    """Writes `data` through a temporary file, so a stopped run never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, ensure_ascii=False)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


def open_for_append(path: Path) -> IO[str]:
    """`path` opened to append JSON lines, after a newline if a stopped run left half a line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ends_mid_line = False
    if path.exists() and path.stat().st_size:
        with path.open("rb") as f:
            f.seek(-1, os.SEEK_END)
            ends_mid_line = f.read(1) != b"\n"
    f = path.open("a", encoding="utf-8")
    if ends_mid_line:
        # Without this the next record would be glued onto the partial line and lost on resume.
        f.write("\n")
    return f
