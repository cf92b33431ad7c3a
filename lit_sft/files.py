"""Files: the cache of dataset URLs (`data/`; Hub files go to the HF cache), atomic writes."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

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
