"""Where lit_sft keeps downloads: datasets under `data/`, Hub weights under `hub/`."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "LIT_SFT_CACHE"


def cache_root() -> Path:
    """`$LIT_SFT_CACHE`, else `$XDG_CACHE_HOME/lit_sft`, else `~/.cache/lit_sft`."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    cache_home = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache_home).expanduser() / "lit_sft"
