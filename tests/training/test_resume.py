"""A run stopped mid-training and resumed with `ckpt_path=last` ends as an uninterrupted one.

Checked against an uninterrupted run of the same config: the resumed run's first step is the
checkpoint's, it trains on the batches the uninterrupted run trained on from there (shuffled, so
the loader's position and shuffle state matter), and it ends with the same weights, optimizer
state and counters.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lit_sft.cli.train import train
from tests.helpers.callbacks import read_batch_log
from tests.helpers.config import TINY_RUN, compose_config
from tests.helpers.scripts import start_script

# 100 synthetic entries: 10 shuffled train batches of 8 per epoch, so 14 steps cross an epoch.
RUN = [
    "data.synthetic_size=100",
    "data.shuffle=true",
    "trainer.max_steps=14",
    "trainer.val_check_interval=3",
    "module.lr=1e-3",
]
LOG = "+callbacks.batch_log._target_=tests.helpers.callbacks.BatchLog"


def batch_log(path: Path) -> list[str]:
    return [LOG, f"+callbacks.batch_log.path={path}"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("uninterrupted")
    train(compose_config([*TINY_RUN, *RUN, *batch_log(run_dir / "batches.jsonl")], run_dir))
    return run_dir


def assert_same_end(resumed: Path, uninterrupted: Path, first_step: int) -> None:
    """Trained from `first_step` on the uninterrupted run's batches, to its weights, optimizer
    state and counters."""
    expected = read_batch_log(uninterrupted / "batches.jsonl")
    assert [record[0] for record in expected] == list(range(14))
    # The checkpoint's step is the resumed run's first; the batches are the ones still due.
    assert read_batch_log(resumed / "resumed.jsonl") == expected[first_step:]

    weights, reference = (load_file(d / "model.safetensors") for d in (resumed, uninterrupted))
    assert weights.keys() == reference.keys()
    for name, tensor in weights.items():
        torch.testing.assert_close(tensor, reference[name], rtol=0, atol=1e-6, msg=name)

    ours, theirs = (
        torch.load(d / "checkpoints" / "last.ckpt", weights_only=False)
        for d in (resumed, uninterrupted)
    )
    assert ours["global_step"] == theirs["global_step"] == 14
    optimizer, reference_optimizer = ours["optimizer_states"][0], theirs["optimizer_states"][0]
    for index, state in reference_optimizer["state"].items():
        for key, value in state.items():
            torch.testing.assert_close(optimizer["state"][index][key], value, rtol=0, atol=1e-6)
    assert ours["lr_schedulers"][0]["last_epoch"] == theirs["lr_schedulers"][0]["last_epoch"] == 14
    assert ours["tokens_seen"] == theirs["tokens_seen"]

    summary, reference_summary = (
        json.loads((d / "summary.json").read_text()) for d in (resumed, uninterrupted)
    )
    assert summary["status"] == "finished"
    for key in ("steps", "epochs", "tokens", "target_tokens"):
        assert summary[key] == reference_summary[key], key
    # Its checkpoint is gone once the run has finished, so a later `ckpt_path=last` uses last.ckpt.
    assert not (resumed / "checkpoints" / "last-interrupted.ckpt").exists()


@pytest.mark.slow
@pytest.mark.parametrize("crash_step", [7, 13])  # mid first epoch, mid second
def test_crashed_run_resumes_from_the_step_it_stopped_at(
    tmp_path: Path, uninterrupted: Path, crash_step: int
) -> None:
    run_dir = tmp_path / "run"
    crashing = compose_config(
        [
            *TINY_RUN,
            *RUN,
            *batch_log(run_dir / "batches.jsonl"),
            "+callbacks.crash._target_=tests.helpers.callbacks.CrashAt",
            f"+callbacks.crash.step={crash_step}",
        ],
        run_dir,
    )
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(crashing)
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "failed"
    # Only the checkpoint written on the exception exists (last.ckpt comes every 50 steps).
    checkpoint = run_dir / "checkpoints" / "last-interrupted.ckpt"
    assert torch.load(checkpoint, weights_only=False)["global_step"] == crash_step
    assert not (run_dir / "checkpoints" / "last.ckpt").exists()

    # Up to the batch it crashed on, it trained as the uninterrupted run did.
    expected = read_batch_log(uninterrupted / "batches.jsonl")
    assert read_batch_log(run_dir / "batches.jsonl") == expected[: crash_step + 1]

    resumed_log = batch_log(run_dir / "resumed.jsonl")
    resumed = train(compose_config([*TINY_RUN, *RUN, *resumed_log, "ckpt_path=last"], run_dir))
    assert resumed["steps"] == 14
    assert_same_end(run_dir, uninterrupted, crash_step)


@pytest.mark.slow
def test_sigterm_checkpoints_the_step_and_resume_continues_it(
    tmp_path: Path, uninterrupted: Path
) -> None:
    run_dir, ready = tmp_path / "run", tmp_path / "ready"
    overrides = [
        *TINY_RUN,
        *RUN,
        *batch_log(run_dir / "batches.jsonl"),
        "+callbacks.wait._target_=tests.helpers.callbacks.WaitForSigtermAt",
        "+callbacks.wait.step=8",
        f"+callbacks.wait.ready_file={ready}",
        f"hydra.run.dir={run_dir}",
    ]
    run = start_script("train.py", *overrides, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 240
    while not ready.exists() and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert ready.exists(), run.communicate()[0][-3000:]
    run.send_signal(signal.SIGTERM)
    output = run.communicate(timeout=120)[0]

    summary = json.loads((run_dir / "summary.json").read_text())
    assert (summary["status"], summary["steps"]) == ("interrupted", 8), output[-3000:]
    checkpoint = run_dir / "checkpoints" / "last-interrupted.ckpt"
    assert torch.load(checkpoint, weights_only=False)["global_step"] == 8
    # It stopped after training step 8's batch (the 8th, step 7), not before or after.
    expected = read_batch_log(uninterrupted / "batches.jsonl")
    assert read_batch_log(run_dir / "batches.jsonl") == expected[:8]

    resumed_log = batch_log(run_dir / "resumed.jsonl")
    train(compose_config([*TINY_RUN, *RUN, *resumed_log, "ckpt_path=last"], run_dir))
    assert_same_end(run_dir, uninterrupted, 8)
