from __future__ import annotations

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from lit_sft.cli.train import train
from lit_sft.data.encoding import EncodedEntry, collate_instructions
from lit_sft.training.sft import InstructionModule

NORMS: list[float] = []
LRS: list[float] = []


class RecordOptimizerStep(L.Callback):
    """Records the gradient norm and learning rate the optimizer is about to step with."""

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        grads = [p.grad for p in pl_module.parameters() if p.grad is not None]
        NORMS.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))
        LRS.append(optimizer.param_groups[0]["lr"])


@pytest.mark.parametrize(("clip", "schedule"), [(None, "constant"), (1e-3, "cosine")])
def test_clipping_and_schedule_reach_the_optimizer(tiny_config, clip, schedule) -> None:
    NORMS.clear()
    LRS.clear()
    cfg = tiny_config(
        "trainer.max_steps=6",
        "module.lr=1e-3",
        f"module.grad_clip={'null' if clip is None else clip}",
        f"module.lr_schedule={schedule}",
        "module.warmup_steps=2",
        "+callbacks.record._target_=test_sft_module.RecordOptimizerStep",
    )
    train(cfg)
    assert len(NORMS) == 6
    if clip is None:
        assert min(NORMS) > 1e-2 and LRS == [1e-3] * 6
    else:
        assert max(NORMS) <= clip * 1.0001
        # Warmup over 2 steps, then cosine over the 4 left to 0.1 x lr (0.1 + 0.45 (1 + cos pi p)).
        assert list(LRS) == pytest.approx([5e-4, 1e-3, 1e-3, 8.681981e-4, 5.5e-4, 2.318019e-4])


FLAGS: list[bool] = []


class RecordCheckpointing(L.Callback):
    def on_train_start(self, trainer, pl_module) -> None:
        FLAGS.append(pl_module.model.activation_checkpointing)


def test_activation_checkpointing_trains_the_same_weights(tiny_config, tmp_path) -> None:
    FLAGS.clear()
    weights = []
    for flag in ("false", "true"):
        run_dir = tmp_path / flag
        cfg = tiny_config(
            "trainer.max_steps=3",
            "data.group_by_length=true",
            f"module.activation_checkpointing={flag}",
            "+callbacks.record._target_=test_sft_module.RecordCheckpointing",
            run_dir=run_dir,
        )
        train(cfg)
        weights.append(load_file(run_dir / "model.safetensors"))
    assert FLAGS == [False, True]
    assert weights[0].keys() == weights[1].keys()
    for name, tensor in weights[0].items():
        torch.testing.assert_close(weights[1][name], tensor, rtol=0, atol=0, msg=name)


def test_response_loss_starts_at_the_target_of_the_first_response_token() -> None:
    """Entry A: prompt [10, 11, 12], response [13, 14]; entry B: prompt [20], response [21, 22].

    Targets are the inputs shifted by one, so A's response is predicted at positions 2 (13),
    3 (14) and 4 (<|endoftext|>); B's at 0, 1, 2. Positions from 2 and from 0, `>=`, not `>`.
    """
    torch.manual_seed(0)
    arch = dict(vocab_size=64, context_length=8, emb_dim=8, n_heads=2, n_layers=1)
    module = InstructionModule(model_config=arch).eval()
    batch = collate_instructions(
        [EncodedEntry([10, 11, 12, 13, 14], 3), EncodedEntry([20, 21, 22], 1)], pad_id=63
    )
    assert batch["response_start"].tolist() == [2, 0]
    with torch.no_grad():
        logits = module.model(batch["input_ids"])
    # Independently: every position's cross-entropy, and the target positions picked by hand.
    losses = F.cross_entropy(
        logits.flatten(0, 1), batch["targets"].clamp(min=0).flatten(), reduction="none"
    ).view(2, 5)
    total = losses[0, :5].sum() + losses[1, :3].sum()
    response = losses[0, 2:5].sum() + losses[1, 0:3].sum()

    module.on_validation_epoch_start()
    with torch.no_grad():
        module.validation_step(batch, 0)
    counts = torch.tensor([8.0, 6.0])  # target tokens: A's 5 and B's 3; response: 3 and 3
    expected = torch.stack([total, counts[0], response, counts[1]])
    torch.testing.assert_close(module.val_totals.float(), expected)
