"""Hydra's errors as one line, and the wrapper every entry point runs under."""

from __future__ import annotations

import functools
import os
import re
import sys
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from hydra.errors import CompactHydraException, InstantiationException, MissingConfigException

from lit_sft.errors import DEBUG_VARIABLE, debugging, exit_if_user_error, one_line

P = ParamSpec("P")
T = TypeVar("T")


def hydra_message(error: Exception) -> str:
    """Hydra's composition error (several lines, with its search path) as one line."""
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


def one_line_user_errors(task: Callable[P, T]) -> Callable[P, T]:
    """`task`, ending in one `error:` line on a user's mistake: inside a Hydra task function
    this spares the user Hydra's own report. Bugs keep their traceback."""

    @functools.wraps(task)
    def run(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return task(*args, **kwargs)
        except Exception as error:
            exit_if_user_error(error)
            raise

    return run


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
