"""A user's mistake ends in one `error:` line and a non-zero exit; a bug keeps its traceback.

Some cases run the scripts as subprocesses, exactly as a user does (stderr, exit status); the
others run the same `__main__` in this process with runpy (the same code path without a new
interpreter's start-up) and check the message that `sys.exit` prints.
"""

from __future__ import annotations

import json
import os
import runpy
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from lit_sft.checkpoints import export_hf
from lit_sft.cli.errors import run_cli
from lit_sft.errors import InvalidInput, one_line, user_error_in
from lit_sft.model import GPT, GPTConfig
from tests.helpers.config import REPO, TINY_RUN, compose_config, save_run_config


def run(script: str, *overrides: str) -> subprocess.CompletedProcess:
    """`python <script> <overrides>` from the repository root, as a user runs it."""
    return subprocess.run(
        [sys.executable, script, *overrides],
        cwd=REPO,
        env={**os.environ, "LIT_SFT_DEBUG": "", "HYDRA_FULL_ERROR": ""},
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch):
    """Runs `script` as `__main__` in this process; returns what it exits with."""
    # run_cli sets both variables for the processes a run starts; monkeypatch restores them.
    monkeypatch.setenv("LIT_SFT_DEBUG", "")
    monkeypatch.setenv("HYDRA_FULL_ERROR", "")

    def call(script: str, *overrides: str) -> str | int | None:
        monkeypatch.setattr(sys, "argv", [script, *overrides])
        with pytest.raises(SystemExit) as exit_info:
            runpy.run_path(str(REPO / script), run_name="__main__")
        return exit_info.value.code

    return call


def closed_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_bad_dataset_names_the_file_the_entry_and_the_field(tmp_path: Path) -> None:
    path = tmp_path / "data.json"
    path.write_text(json.dumps([{"instruction": "a", "output": "b"}, {"instruction": "c"}]))
    result = run("train.py", *TINY_RUN, f"data.path={path}", f"hydra.run.dir={tmp_path / 'r'}")
    assert result.returncode == 1
    assert result.stderr == (
        f"error: entry 1 has no 'output' field, in {path}; give every entry string fields "
        "instruction, output (or read 'output' from a field of another name: "
        "data.fields.output=<its name>)\n"
    )
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert (summary["status"], summary["steps"]) == ("failed", 0)
    assert summary["error"].startswith("entry 1 has no 'output' field")


def test_a_train_split_smaller_than_a_batch_stops_before_training(tmp_path: Path, cli) -> None:
    code = cli("train.py", *TINY_RUN, "data.synthetic_size=6", f"hydra.run.dir={tmp_path}")
    assert code == (
        "error: the train split (train 5, val 1, test 0 entries) is smaller than one batch of "
        "data.batch_size=8 per process, so no step would be trained, in the synthetic set; "
        "pass data.batch_size=5 or less, or use more data"
    )
    assert not (tmp_path / "model.safetensors").exists()


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        (
            "trainer.max_stepz=3",
            "unknown config key 'trainer.max_stepz', in the command line; check its spelling "
            "(`--cfg job` prints every key), or add a new key as +trainer.max_stepz=<value>",
        ),
        (
            "model=gpt2-huge",
            "unknown model 'gpt2-huge', in the command line or an experiment's defaults; "
            "choose one of gpt2-large, gpt2-medium, gpt2-small, gpt2-tiny, gpt2-xl",
        ),
        (
            "logger=[tensorboard,csvv]",
            "unknown logger 'csvv', in the command line or an experiment's defaults; the "
            "choices are the files in conf/logger/",
        ),
        (
            "module.lr_schedule=linear",
            "unknown lr_schedule 'linear', in module.lr_schedule; choose one of constant, cosine",
        ),
    ],
)
def test_config_mistakes(tmp_path: Path, cli, override: str, expected: str) -> None:
    code = cli("train.py", *TINY_RUN, override, f"hydra.run.dir={tmp_path}")
    assert code == f"error: {expected}"


def test_a_missing_weights_file(tmp_path: Path, cli) -> None:
    weights = tmp_path / "nowhere.safetensors"
    code = cli("train.py", *TINY_RUN, f"model.weights={weights}", f"hydra.run.dir={tmp_path}")
    assert code == (
        f"error: weights file {weights} does not exist (absolute: {weights}); model.weights "
        "takes 'pretrained', null, a .safetensors/.ckpt/.pt/.pth/.bin file or a folder holding "
        "model.safetensors"
    )


def test_an_unreachable_data_server(tmp_path: Path, cli) -> None:
    url = f"http://127.0.0.1:{closed_port()}/data.json"
    code = cli(
        "train.py", *TINY_RUN, f"data.path={url}", f"hub.cache_dir={tmp_path / 'cache'}",
        f"hydra.run.dir={tmp_path / 'r'}",
    )  # fmt: skip
    assert "\n" not in code and code.startswith(f"error: could not download {url} (Connection")
    assert code.endswith(
        "Without network access, pass a local file instead: data.path=/path/to/data.json"
    )


@pytest.fixture
def run_folder(tmp_path: Path) -> Path:
    """A run folder holding only its composed config, as a run that stopped early leaves it."""
    folder = tmp_path / "run"
    save_run_config(compose_config(TINY_RUN, folder), folder)
    return folder


def test_evaluate_a_run_folder_without_a_model(run_folder: Path, cli) -> None:
    code = cli("evaluate.py", f"run_dir={run_folder}", "scorer=exact_match")
    assert code == (
        f"error: {run_folder} holds neither model.safetensors nor checkpoints/last.ckpt; "
        "pass weights=<file> to name the weights"
    )


def test_evaluate_a_folder_that_is_not_a_run(tmp_path: Path, cli) -> None:
    code = cli("evaluate.py", f"run_dir={tmp_path}", "scorer=exact_match")
    assert code == (
        f"error: {tmp_path} is not a training run (no .hydra/config.yaml): pass "
        "run_dir=<run folder>, or weights=<file> model=<size> prompt=<style> [data=...]"
    )


def test_evaluate_with_an_unreachable_judge_keeps_the_answers(run_folder: Path) -> None:
    arch = compose_config(TINY_RUN).model.arch
    export_hf(GPT(GPTConfig(**OmegaConf.to_container(arch, resolve=True))), run_folder)
    url = f"http://127.0.0.1:{closed_port()}"
    result = run(
        "evaluate.py", f"run_dir={run_folder}", f"judge.url={url}", "limit=2",
        "max_new_tokens=2", "judge.max_attempts=1", "device=cpu",
    )  # fmt: skip
    (answers,) = (run_folder / "eval").glob("*/answers.json")  # eval/<answers>/answers.json
    # Above the error line there is only the progress bar of the answers (tqdm writes stderr).
    *progress, last = result.stderr.splitlines()
    assert result.returncode == 1 and all(line.startswith("answering") for line in progress[1:])
    assert last.startswith(f"error: cannot reach the ollama judge server at {url} (")
    assert last.endswith(f"; the answers are kept in {answers}: run again to score them")
    assert sum(a is not None for a in json.loads(answers.read_text())) == 2


@pytest.mark.parametrize("variable", ["LIT_SFT_DEBUG", "HYDRA_FULL_ERROR"])
def test_a_debug_flag_raises_the_error_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    # Set before deleting, so that the teardown removes the LIT_SFT_DEBUG=1 run_cli sets in turn
    # (a delenv of an absent variable records nothing to undo, and the flag would leak into later
    # tests' subprocesses, turning their one-line errors into tracebacks).
    monkeypatch.setenv("LIT_SFT_DEBUG", "")
    monkeypatch.delenv("LIT_SFT_DEBUG")
    monkeypatch.setenv("HYDRA_FULL_ERROR", "")
    monkeypatch.setenv(variable, "1")
    argv = ["train.py", *TINY_RUN, "data.synthetic_size=6", f"hydra.run.dir={tmp_path}"]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(InvalidInput, match="^the train split"):
        runpy.run_path(str(REPO / "train.py"), run_name="__main__")


def test_a_bug_keeps_its_traceback(tmp_path: Path) -> None:
    """A genuine bug (here: the DataModule dividing by zero) is not dressed up as a user error."""
    code = (
        "import runpy, sys; from lit_sft.data.sft import InstructionDataModule as D\n"
        "D.setup = lambda self, stage=None: 1 / 0\n"
        f"sys.argv = ['train.py', 'data=synthetic', 'hydra.run.dir={tmp_path}']\n"
        "runpy.run_path('train.py', run_name='__main__')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 1
    assert "Traceback (most recent call last)" in result.stderr
    assert result.stderr.rstrip().endswith("ZeroDivisionError: division by zero")


def test_run_cli_passes_bugs_through_and_finds_wrapped_user_errors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # run_cli sets both variables for the processes a run starts: restored after this test, so
    # that later tests' subprocesses report user errors as one line.
    monkeypatch.setenv("LIT_SFT_DEBUG", "")
    monkeypatch.setenv("HYDRA_FULL_ERROR", "")
    with pytest.raises(ZeroDivisionError):
        run_cli(lambda: 1 / 0)
    wrapped = RuntimeError("Error in call to target")
    wrapped.__cause__ = InvalidInput("bad value, in x; fix it")
    assert user_error_in(wrapped) is wrapped.__cause__
    assert user_error_in(RuntimeError("bug")) is None
    assert one_line(InvalidInput("first\n  second\n\nthird")) == "first; second; third"
