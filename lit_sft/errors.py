"""Mistakes a user can fix, and the one wrapper that reports them as one line without a traceback.

A user error reads `error: <what>, <where>, <how to fix>`. Bugs keep their tracebacks, and so does
everything with `LIT_SFT_DEBUG=1` (or Hydra's own `HYDRA_FULL_ERROR=1`).
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable
from typing import Any

DEBUG_VARIABLE = "LIT_SFT_DEBUG"


class UserError(Exception):
    """A mistake the user can fix: bad data, an unknown option, a missing file, a server down."""


class InvalidInput(UserError, ValueError):
    """A value the user gave (data, option, file content) that cannot be used."""


class MissingFile(UserError, FileNotFoundError):
    """A file or folder the user named that is not there."""


def one_line(error: BaseException) -> str:
    """The error's message on one line (the lines of a longer one joined by '; ')."""
    lines = (line.strip() for line in str(error).splitlines())
    return "; ".join(line for line in lines if line) or type(error).__name__


def user_error_in(error: BaseException) -> UserError | None:
    """The user error `error` is or was raised from (Hydra's `instantiate` wraps them)."""
    seen: BaseException | None = error
    while seen is not None and not isinstance(seen, UserError):
        seen = seen.__cause__
    return seen


def hydra_message(error: Exception) -> str:
    """Hydra's composition error (several lines, with its search path) as one line."""
    from hydra.errors import MissingConfigException

    message = str(error)
    if isinstance(error, MissingConfigException) and error.missing_cfg_file:
        group, _, name = error.missing_cfg_file.rpartition("/")
        where = f"unknown {group} {name!r}" if group else f"unknown config {name!r}"
        options = (
            f"; choose one of {', '.join(error.options)}"
            if error.options
            else f"; the choices are the files in conf/{group}/"
        )
        return f"{where}, in the command line or an experiment's defaults{options}"
    if match := re.match(r"Could not override '([^']+)'", message):
        key = match.group(1)
        return (
            f"unknown config key {key!r}, in the command line; check its spelling "
            f"(`--cfg job` prints every key), or add a new key as +{key}=<value>"
        )
    # Drop the config search path Hydra appends: it names Hydra's internals, not the mistake.
    return one_line(message.split("Config search path:")[0])


def debugging() -> bool:
    """Whether the user asked for full tracebacks (LIT_SFT_DEBUG=1, else HYDRA_FULL_ERROR=1)."""
    flag = os.environ.get(DEBUG_VARIABLE)
    if flag is None:
        flag = os.environ.get("HYDRA_FULL_ERROR", "")
    return flag not in ("", "0")


def exit_if_user_error(error: BaseException) -> None:
    """Exits with the one-line report if `error` is or wraps a user error, unless debugging.

    Called inside a Hydra task function: exiting there spares the user Hydra's own report.
    """
    if (user_error := user_error_in(error)) and not debugging():
        sys.exit(f"error: {one_line(user_error)}")


def run_cli(entry: Callable[[], Any]) -> None:
    """Runs a `@hydra.main` entry point; a user or config error ends in one `error:` line."""
    debug = debugging()
    # Hydra then re-raises instead of printing its own report, and the processes a run starts
    # (DDP ranks re-run the script) inherit both variables, so they report the same way.
    os.environ["HYDRA_FULL_ERROR"] = "1"
    os.environ[DEBUG_VARIABLE] = "1" if debug else "0"
    if debug:
        entry()
        return
    # Imported here: the rest of lit_sft takes plain values and never needs Hydra.
    from hydra.errors import CompactHydraException, InstantiationException

    try:
        entry()
    except Exception as error:
        exit_if_user_error(error)
        # A constructor that fails on its own is a bug, not a composition mistake.
        if isinstance(error, CompactHydraException) and not isinstance(
            error, InstantiationException
        ):
            sys.exit(f"error: {hydra_message(error)}")
        raise
