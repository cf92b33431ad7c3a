"""The loss family in DPOModule: options reach the loss; reference-free losses run no reference."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from lit_sft.cli.train import build_module
from lit_sft.data.preference import EncodedPair, collate_preferences
from lit_sft.data.sft import EncodedEntry
from lit_sft.training.dpo import DPOModule
from tests.helpers.config import TINY_RUN, compose_config
from tests.helpers.dpo import MODEL_CONFIG, constant_logits_model

# Prompt [1], chosen [0, 0] + end-of-text, rejected [1] + end-of-text (end-of-text = pad = 1):
# chosen targets 0, 0, 1; rejected targets 1, 1.
BATCH = collate_preferences(
    [EncodedPair(0, EncodedEntry([1, 0, 0], 1), EncodedEntry([1, 1], 1))], pad_id=1
)
# Policy logits (log 3, 0): token 0 has log(3/4), token 1 log(1/4).
P0, P1 = math.log(3 / 4), math.log(1 / 4)
CHOSEN_MEAN, REJECTED_MEAN = (2 * P0 + P1) / 3, P1


def module_with(**options: float | str) -> DPOModule:
    module = DPOModule(MODEL_CONFIG, **options)
    module.model = constant_logits_model([math.log(3), 0.0])
    return module


@pytest.mark.parametrize("loss", ["simpo", "orpo"])
def test_a_reference_free_loss_keeps_no_copy_and_runs_no_reference_pass(loss: str) -> None:
    module = module_with(loss=loss, beta=2.0)
    module.configure_model()
    assert module._frozen == [] and not module.needs_reference
    module.model = constant_logits_model([math.log(3), 0.0])
    passes: list[int] = []
    module.model.final_norm.register_forward_hook(lambda *args: passes.append(1))
    module.reference_logps = None  # any reference pass would fail
    module.preference_losses(BATCH)
    assert len(passes) == 1  # the policy's one pass over the batch, nothing else


def test_a_reference_loss_keeps_its_frozen_copy() -> None:
    module = module_with(loss="ipo")
    module.configure_model()
    assert len(module._frozen) == 1 and module.needs_reference


def test_simpo_in_the_module_is_the_hand_computed_one() -> None:
    out, policy = module_with(loss="simpo", beta=2.0, simpo_gamma=0.5).preference_losses(BATCH)
    z = 2.0 * CHOSEN_MEAN - 2.0 * REJECTED_MEAN - 0.5
    assert out.losses.item() == pytest.approx(math.log(1 + math.exp(-z)), abs=1e-5)
    assert policy.tolist() == pytest.approx([CHOSEN_MEAN, REJECTED_MEAN], abs=1e-5)
    assert out.chosen_rewards.item() == pytest.approx(2.0 * CHOSEN_MEAN, abs=1e-5)


def test_orpo_in_the_module_is_the_hand_computed_one() -> None:
    out, _ = module_with(loss="orpo", orpo_lambda=0.25).preference_losses(BATCH)

    def odds(mean_logp: float) -> float:
        return math.exp(mean_logp) / (1 - math.exp(mean_logp))

    log_or = math.log(odds(CHOSEN_MEAN) / odds(REJECTED_MEAN))
    expected = -CHOSEN_MEAN + 0.25 * math.log(1 + math.exp(-log_or))
    assert out.losses.item() == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("logp", ["sum", "mean"])
def test_ipo_and_sft_weight_in_the_module_are_the_hand_computed_ones(logp: str) -> None:
    module = module_with(loss="ipo", beta=0.5, sft_weight=0.3, logp=logp)
    module._frozen.append(constant_logits_model([0.0, 0.0]))  # every target: −log 2
    out, _ = module.preference_losses(BATCH)
    if logp == "sum":
        h = (2 * P0 + P1 + 3 * math.log(2)) - (2 * P1 + 2 * math.log(2))
    else:
        h = (CHOSEN_MEAN + math.log(2)) - (REJECTED_MEAN + math.log(2))
    expected = (h - 1 / (2 * 0.5)) ** 2 + 0.3 * -CHOSEN_MEAN  # NLL per token, whatever logp
    assert out.losses.item() == pytest.approx(expected, abs=1e-5)


def test_options_a_loss_cannot_use_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown dpo.loss 'kto'"):
        DPOModule(MODEL_CONFIG, loss="kto")
    with pytest.raises(ValueError, match="does nothing with dpo.loss=hinge"):
        DPOModule(MODEL_CONFIG, loss="hinge", label_smoothing=0.1)
    with pytest.raises(
        ValueError, match="precompute_reference=true does nothing with dpo.loss=orpo"
    ):
        DPOModule(MODEL_CONFIG, loss="orpo", precompute_reference=True)


def test_the_dpo_options_reach_the_module_through_the_config(tmp_path: Path) -> None:
    overrides = [
        "dpo.loss=orpo",
        "dpo.sft_weight=0.3",
        "dpo.simpo_gamma=0.7",
        "dpo.orpo_lambda=0.2",
        "dpo.beta=0.4",
    ]
    cfg = compose_config([*TINY_RUN, "method=dpo", *overrides], tmp_path)
    module, _ = build_module(cfg)  # as train.py builds it
    assert module.hparams.loss == "orpo" and not module.needs_reference
    options = module.loss_options
    assert (options.sft_weight, options.simpo_gamma, options.orpo_lambda, options.beta) == (
        0.3,
        0.7,
        0.2,
        0.4,
    )
