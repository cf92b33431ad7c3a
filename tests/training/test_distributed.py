from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import tiktoken
import torch
from safetensors.torch import load_file

from lit_sft.data.synthetic import synthetic_entries
from tests.helpers.callbacks import read_batch_log
from tests.helpers.config import TINY_RUN, scalars
from tests.helpers.scripts import run_script

RUN = [
    *TINY_RUN,
    "data.shuffle=false",
    "trainer.max_steps=6",
    "trainer.val_check_interval=3",
    "trainer.accelerator=cpu",
    "module.lr=1e-3",
    "hydra.job.chdir=false",
]


def run_train(run_dir: Path, *overrides: str) -> None:
    result = run_script("train.py", *RUN, *overrides, f"hydra.run.dir={run_dir}", timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.slow
def test_two_process_ddp_follows_the_single_process_loss_trajectory(tmp_path: Path) -> None:
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    run_train(single, "data.batch_size=8")
    run_train(ddp, "trainer=ddp", "trainer.devices=2", "data.batch_size=4")
    single_losses = [value for _, value in scalars(single, "train/loss")]
    ddp_losses = [value for _, value in scalars(ddp, "train/loss")]
    assert len(single_losses) == len(ddp_losses) == 6
    for one, two in zip(single_losses, ddp_losses, strict=True):
        assert abs(one - two) <= 1e-5
    single_val = [value for _, value in scalars(single, "val/loss")]
    ddp_val = [value for _, value in scalars(ddp, "val/loss")]
    assert single_val == pytest.approx(ddp_val, abs=1e-5)


class GradNorms(L.Callback):
    """Appends the norm of the gradient each optimizer step takes to a file (rank 0's)."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        norm = torch.stack([p.grad.norm() for p in pl_module.parameters() if p.grad is not None])
        if trainer.is_global_zero:
            with self.path.open("a") as f:
                f.write(f"{float(norm.norm())}\n")


def grad_norms(run_dir: Path) -> list[str]:
    return [
        "+callbacks.grads._target_=tests.training.test_distributed.GradNorms",
        f"+callbacks.grads.path={run_dir / 'grads.txt'}",
    ]


@pytest.mark.slow
def test_two_processes_accumulating_two_batches_step_as_one_batch_of_all_the_rows(
    tmp_path: Path,
) -> None:
    # Each optimizer step: 8 rows in one batch, or 2 ranks x 2 accumulated batches of 2 rows (the
    # sampler deals rows 0, 2, 4, 6 to rank 0 and 1, 3, 5, 7 to rank 1), unequal target counts.
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    run_train(single, "data.batch_size=8", "trainer.max_steps=3", *grad_norms(single))
    run_train(
        ddp,
        *grad_norms(ddp),
        "trainer=ddp",
        "trainer.devices=2",
        "data.batch_size=2",
        "trainer.max_steps=3",
        "module.accumulate_grad_batches=2",
    )
    # The same gradients (AdamW would hide a constant factor in them), then the same weights.
    norms = [[float(x) for x in (d / "grads.txt").read_text().split()] for d in (single, ddp)]
    assert len(norms[0]) == 3 and norms[1] == pytest.approx(norms[0], rel=1e-5)
    weights, reference = (load_file(d / "model.safetensors") for d in (ddp, single))
    for name, tensor in weights.items():
        assert (tensor - reference[name]).abs().max() <= 1e-5, name
    summaries = [json.loads((d / "summary.json").read_text()) for d in (single, ddp)]
    assert summaries[0]["steps"] == summaries[1]["steps"] == 3


@pytest.mark.slow
def test_lora_under_ddp_follows_the_single_process_loss_trajectory(tmp_path: Path) -> None:
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    lora = ["adapter=lora", "adapter.rank=4", "adapter.dropout=0.0", "module.lr=1e-2"]
    run_train(single, *lora, "data.batch_size=8")
    run_train(ddp, *lora, "trainer=ddp", "trainer.devices=2", "data.batch_size=4")
    single_losses = [value for _, value in scalars(single, "train/loss")]
    ddp_losses = [value for _, value in scalars(ddp, "train/loss")]
    assert len(single_losses) == len(ddp_losses) == 6
    assert single_losses[-1] < single_losses[0] - 0.01  # the adapters do learn
    for one, two in zip(single_losses, ddp_losses, strict=True):
        assert abs(one - two) <= 1e-5


def instructions_per_epoch(run_dir: Path, rank: int, steps_per_epoch: int) -> list[list[str]]:
    """The instruction of every row rank `rank` trained on, in order, one list per epoch.

    Rows are told apart by their instruction (unique in the synthetic set), read back from the
    Alpaca prompt: the line after "### Instruction:".
    """
    gpt2 = tiktoken.get_encoding("gpt2")
    epochs: list[list[str]] = []
    for step, _, _, _, rows in read_batch_log(run_dir / f"batches.rank{rank}.jsonl"):
        if step % steps_per_epoch == 0:
            epochs.append([])
        for row in rows:
            text = gpt2.decode([token for token in row if token != gpt2.eot_token])
            epochs[-1].append(text.split("### Instruction:\n")[1].split("\n")[0])
    return epochs


@pytest.mark.slow
def test_ddp_shuffle_splits_each_epoch_between_the_ranks_and_follows_the_seed(
    tmp_path: Path,
) -> None:
    # 160 entries: 136 train (85 %), 17 steps of 2 ranks x 4 rows, nothing dropped or padded.
    entries = synthetic_entries(160, seed=123)
    data = tmp_path / "data.json"
    data.write_text(json.dumps(entries))
    file_order = [entry["instruction"] for entry in entries[:136]]
    steps_per_epoch = 17

    def run(name: str, seed: int) -> list[list[list[str]]]:
        """Per epoch, per rank: the instructions trained on, in order."""
        run_dir = tmp_path / name
        run_train(
            run_dir,
            f"data.path={data}",
            "data.shuffle=true",
            "trainer=ddp",
            "trainer.devices=2",
            "data.batch_size=4",
            "trainer.max_steps=-1",
            "trainer.max_epochs=2",
            "trainer.val_check_interval=17",
            f"seed={seed}",
            "+callbacks.batch_log._target_=tests.helpers.callbacks.BatchLog",
            f"+callbacks.batch_log.path={run_dir / 'batches.jsonl'}",
            "+callbacks.batch_log.rows=true",
            "+callbacks.batch_log.per_rank=true",
        )
        ranks = [instructions_per_epoch(run_dir, rank, steps_per_epoch) for rank in (0, 1)]
        return [list(epoch) for epoch in zip(*ranks, strict=True)]

    first = run("seed123", 123)
    assert len(first) == 2
    for rank0, rank1 in first:
        assert len(rank0) == len(rank1) == 68
        assert not set(rank0) & set(rank1)
        assert sorted(rank0 + rank1) == sorted(file_order)
    assert first[0] != first[1]  # each epoch shuffles anew
    assert first[0][0] != file_order[0::2]  # not the unshuffled split of data.shuffle=false
    assert run("seed123-again", 123) == first
    other = run("seed7", 7)
    assert other[0][0] != first[0][0] and other[0][1] != first[0][1]
