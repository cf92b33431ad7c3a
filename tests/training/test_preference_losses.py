"""Each preference loss against its paper's formula worked by hand with `math`, per pair."""

from __future__ import annotations

import math

import pytest
import torch

from lit_sft.errors import InvalidInput
from lit_sft.training.preference_losses import (
    LOSSES,
    LossOptions,
    check_loss_options,
    pair_losses,
    preference_loss,
)


def log_sigmoid(x: float) -> float:
    return -math.log(1 + math.exp(-x))


# Two pairs: policy (chosen, rejected) summed log-probabilities, reference ones, and the policy's
# mean log-probability per chosen and rejected token (answers of 4 and 2 tokens).
POLICY = ([-2.0, -6.0], [-5.0, -3.0])
REFERENCE = ([-3.0, -5.0], [-4.0, -4.5])
MEANS = ([-0.5, -1.5], [-2.5, -1.5])


def run(name: str, options: LossOptions, means: bool = False) -> torch.Tensor:
    policy = MEANS if means else POLICY
    reference = None if means else REFERENCE
    out = pair_losses(
        name,
        options,
        (torch.tensor(policy[0]), torch.tensor(policy[1])),
        reference and (torch.tensor(reference[0]), torch.tensor(reference[1])),
        torch.tensor(MEANS[0]),
    )
    return out


def margins() -> list[float]:
    """h = (log π(c) − log π_ref(c)) − (log π(r) − log π_ref(r)) of each pair."""
    return [
        (POLICY[0][i] - REFERENCE[0][i]) - (POLICY[1][i] - REFERENCE[1][i]) for i in range(2)
    ]  # pair 0: 1 − (−1) = 2; pair 1: −1 − 1.5 = −2.5


def test_sigmoid_is_dpo_with_conservative_label_smoothing() -> None:
    options = LossOptions(beta=0.5, label_smoothing=0.1)
    expected = [-0.9 * log_sigmoid(0.5 * h) - 0.1 * log_sigmoid(-0.5 * h) for h in margins()]
    out = run("sigmoid", options)
    assert out.losses.tolist() == pytest.approx(expected, abs=1e-6)
    # Rewards β·(log π − log π_ref): pair 0 chosen 0.5·1, rejected 0.5·(−1).
    assert out.chosen_rewards.tolist() == pytest.approx([0.5, -0.5])
    assert out.rejected_rewards.tolist() == pytest.approx([-0.5, 0.75])


def test_sigmoid_docstring_example_and_log_2_at_zero_margin() -> None:
    one = torch.tensor
    out = pair_losses(
        "sigmoid", LossOptions(beta=0.5), (one([1.0]), one([-1.0])), (one([0.0]),) * 2, one([0.0])
    )
    assert out.losses.item() == pytest.approx(math.log(1 + math.exp(-1)), abs=1e-7)
    same = pair_losses(
        "sigmoid", LossOptions(), (one([-3.0]), one([-5.0])), (one([-3.0]), one([-5.0])), one([0.0])
    )
    assert same.losses.item() == pytest.approx(math.log(2), abs=1e-7)


def test_ipo_is_the_squared_distance_to_one_over_two_beta() -> None:
    beta = 0.1
    expected = [(h - 1 / (2 * beta)) ** 2 for h in margins()]  # (2 − 5)² = 9, (−2.5 − 5)² = 56.25
    assert expected == pytest.approx([9.0, 56.25])
    assert run("ipo", LossOptions(beta=beta)).losses.tolist() == pytest.approx(expected, abs=1e-5)


def test_hinge_is_zero_past_the_margin() -> None:
    beta = 0.5
    expected = [max(0.0, 1 - beta * h) for h in margins()]  # 0 (1 − 1), 2.25 (1 + 1.25)
    assert expected == [0.0, 2.25]
    assert run("hinge", LossOptions(beta=beta)).losses.tolist() == pytest.approx(expected)


def test_simpo_uses_mean_logps_a_margin_and_no_reference() -> None:
    beta, gamma = 2.0, 1.0
    expected = [
        -log_sigmoid(beta * MEANS[0][i] - beta * MEANS[1][i] - gamma) for i in range(2)
    ]  # z = −1 + 5 − 1 = 3; z = −3 + 3 − 1 = −1
    out = run("simpo", LossOptions(beta=beta, simpo_gamma=gamma), means=True)
    assert out.losses.tolist() == pytest.approx(expected, abs=1e-6)
    assert out.chosen_rewards.tolist() == pytest.approx([-1.0, -3.0])  # β·mean log π
    assert not LOSSES["simpo"].reference and LOSSES["simpo"].length_normalised


def test_orpo_is_nll_plus_lambda_times_the_log_odds_ratio_term() -> None:
    lam = 0.1

    def odds(mean_logp: float) -> float:
        p = math.exp(mean_logp)
        return p / (1 - p)

    expected = [
        -MEANS[0][i] - lam * log_sigmoid(math.log(odds(MEANS[0][i]) / odds(MEANS[1][i])))
        for i in range(2)
    ]
    out = run("orpo", LossOptions(orpo_lambda=lam), means=True)
    assert out.losses.tolist() == pytest.approx(expected, abs=1e-6)
    assert not LOSSES["orpo"].reference


def test_orpo_docstring_example() -> None:
    one = torch.tensor
    chosen, rejected = one([math.log(0.5)]), one([math.log(0.2)])
    out = pair_losses("orpo", LossOptions(orpo_lambda=0.1), (chosen, rejected), None, chosen)
    assert out.losses.item() == pytest.approx(math.log(2) + 0.1 * math.log(1.25), abs=1e-6)


@pytest.mark.parametrize("name", list(LOSSES))
def test_sft_weight_adds_the_chosen_answers_nll_per_token(name: str) -> None:
    means = not LOSSES[name].reference
    options = LossOptions(beta=0.5, simpo_gamma=0.5, orpo_lambda=0.2)
    plain = run(name, options, means=means).losses
    weighted = run(name, LossOptions(**{**options.__dict__, "sft_weight": 0.3}), means=means)
    # NLL per token of the chosen answers: 0.5 and 1.5.
    assert (weighted.losses - plain).tolist() == pytest.approx([0.3 * 0.5, 0.3 * 1.5], abs=1e-6)


def test_a_reference_loss_refuses_to_run_without_reference() -> None:
    one = torch.tensor([0.0])
    with pytest.raises(ValueError, match="needs the reference"):
        pair_losses("ipo", LossOptions(), (one, one), None, one)


def test_unknown_loss_and_meaningless_options_are_one_clear_line() -> None:
    with pytest.raises(InvalidInput, match="unknown dpo.loss 'kto'; choose one of sigmoid, ipo"):
        preference_loss("kto")
    with pytest.raises(InvalidInput, match="does nothing with dpo.loss=ipo"):
        check_loss_options("ipo", LossOptions(label_smoothing=0.1))
    with pytest.raises(InvalidInput, match=r"\[0, 0.5\)"):
        check_loss_options("sigmoid", LossOptions(label_smoothing=0.5))
    with pytest.raises(InvalidInput, match="dpo.beta"):
        check_loss_options("sigmoid", LossOptions(beta=0.0))
    check_loss_options("simpo", LossOptions(label_smoothing=0.2))


def test_orpo_log_odds_stay_finite_when_an_answer_is_certain() -> None:
    one = torch.tensor
    out = pair_losses("orpo", LossOptions(), (one([0.0]), one([-1.0])), None, one([0.0]))
    assert torch.isfinite(out.losses).all()
