"""Mistakes a user can fix, and how they are reported: one line, no traceback.

A user error reads `error: <what>, <where>, <how to fix>`. Bugs keep their tracebacks, and so does
everything with `LIT_SFT_DEBUG=1` (or Hydra's own `HYDRA_FULL_ERROR=1`). The wrapper that entry
points run under, and the translation of Hydra's own errors, are in `lit_sft.cli.errors`.
"""

from __future__ import annotations

import os
import sys

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
