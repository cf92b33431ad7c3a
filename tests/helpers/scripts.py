"""The entry scripts (`train.py`, `chat.py`, `serve.py`, `evaluate.py`, `python -m ...`) run as a
user runs them: a child Python in the repository root, on one thread."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping

from tests.helpers.config import REPO


def script_env(**extra: str) -> dict[str, str]:
    """This environment, on one thread and unbuffered, with `extra`."""
    return {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", **extra}


def run_script(
    *command: str,
    env: Mapping[str, str] | None = None,
    stdin: str | None = None,
    timeout: float | None = 300,
) -> subprocess.CompletedProcess[str]:
    """`python <command>` run to its end; its output captured as text."""
    return subprocess.run(
        [sys.executable, *command],
        cwd=REPO,
        env=dict(env) if env is not None else script_env(),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start_script(
    *command: str, env: Mapping[str, str] | None = None, stderr: int = subprocess.PIPE
) -> subprocess.Popen[str]:
    """`python <command>` started in the background, its stdout (and stderr) piped as text."""
    return subprocess.Popen(
        [sys.executable, *command],
        cwd=REPO,
        env=dict(env) if env is not None else script_env(),
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
    )
