"""The preference-loss family: DPO (sigmoid), IPO, hinge, SimPO, ORPO, and an SFT term on top.

Each loss is a small pure function of per-pair scores, chosen by name from `LOSSES`:

- with a reference (sigmoid, ipo, hinge) the scores are the log-ratios log π(y) − log π_ref(y)
  of the chosen and rejected answers, their log-probabilities summed or averaged over the
  answer's tokens (`dpo.logp`), and they depend only on the difference h of the two log-ratios;
- reference-free (simpo, orpo) the scores are the policy's mean log-probability per answer token.

Rewards are in one unit throughout: β × the score (the DPO paper's and TRL's implicit reward
β·(log π − log π_ref); SimPO's β·mean log π). The book's notebook logs the plain log-ratio
(no β): its reward margin of 1.98 at β = 0.1 is 0.198 in this unit.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from lit_sft.errors import InvalidInput


@dataclass(frozen=True)
class LossOptions:
    """The settings of the loss family: `dpo.*` in conf/method/dpo.yaml."""

    beta: float = 0.1
    label_smoothing: float = 0.0  # sigmoid and simpo: the label is wrong with this probability
    simpo_gamma: float = 0.5  # SimPO's target reward margin γ
    orpo_lambda: float = 0.1  # ORPO's weight λ of the odds-ratio term beside the NLL
    sft_weight: float = 0.0  # weight of the chosen answer's NLL per token, added to any loss


@dataclass(frozen=True)
class PreferenceLosses:
    """Per pair: the loss, and the rewards of both answers (β × their scores, detached)."""

    losses: Tensor
    chosen_rewards: Tensor
    rejected_rewards: Tensor


def sigmoid_loss(chosen: Tensor, rejected: Tensor, options: LossOptions) -> Tensor:
    """DPO (Rafailov et al. 2023): −log σ(β·h), h = chosen − rejected log-ratio.

    `label_smoothing` ε is conservative DPO: −(1 − ε)·log σ(βh) − ε·log σ(−βh). Worked example:
    log-ratios 1 and −1, β = 0.5: βh = 1, loss −log σ(1) = log(1 + e⁻¹) ≈ 0.3133; h = 0 gives
    log 2 ≈ 0.6931.
    """
    z = options.beta * (chosen - rejected)
    eps = options.label_smoothing
    return -(1 - eps) * F.logsigmoid(z) - eps * F.logsigmoid(-z)


def ipo_loss(chosen: Tensor, rejected: Tensor, options: LossOptions) -> Tensor:
    """IPO (Azar et al. 2023): (h − 1/(2β))², a squared loss that stops at a finite margin.

    Worked example: log-ratios 1 and −1 (h = 2), β = 0.1: (2 − 5)² = 9; at h = 5 the loss is 0.
    """
    return (chosen - rejected - 1 / (2 * options.beta)) ** 2


def hinge_loss(chosen: Tensor, rejected: Tensor, options: LossOptions) -> Tensor:
    """SLiC / RSO (Zhao et al. 2023, Liu et al. 2023): max(0, 1 − β·h).

    Worked example: h = 1, β = 0.5: max(0, 1 − 0.5) = 0.5; h = 4: 0 (the margin is met).
    """
    return torch.relu(1 - options.beta * (chosen - rejected))


def simpo_loss(chosen: Tensor, rejected: Tensor, options: LossOptions) -> Tensor:
    """SimPO (Meng et al. 2024), no reference: −log σ(β·mean log π(c) − β·mean log π(r) − γ).

    Worked example: mean log-probabilities −0.5 and −1.5, β = 2, γ = 1: z = −1 + 3 − 1 = 1,
    loss log(1 + e⁻¹) ≈ 0.3133. `label_smoothing` as in `sigmoid_loss`.
    """
    z = options.beta * (chosen - rejected) - options.simpo_gamma
    eps = options.label_smoothing
    return -(1 - eps) * F.logsigmoid(z) - eps * F.logsigmoid(-z)


def log_odds(mean_logps: Tensor) -> Tensor:
    """log(p / (1 − p)) of p = exp(mean log-probability), accurate as p nears 1."""
    # A mean log-probability of exactly 0 (p = 1) would make the odds infinite.
    mean_logps = mean_logps.clamp(max=-1e-6)
    return mean_logps - torch.log(-torch.expm1(mean_logps))


def orpo_loss(chosen: Tensor, rejected: Tensor, options: LossOptions) -> Tensor:
    """ORPO (Hong et al. 2024), no reference: NLL(c) + λ·(−log σ(log odds(c) − log odds(r))).

    Odds are p/(1 − p) of the per-token probability p = exp(mean log π). Worked example: mean
    log-probabilities log 0.5 and log 0.2 (odds 1 and 1/4, log odds ratio log 4), λ = 0.1:
    0.6931 + 0.1·log(1 + 1/4) = 0.6931 + 0.0223 ≈ 0.7155.
    """
    odds_term = -F.logsigmoid(log_odds(chosen) - log_odds(rejected))
    return -chosen + options.orpo_lambda * odds_term


LossFormula = Callable[[Tensor, Tensor, LossOptions], Tensor]


@dataclass(frozen=True)
class PreferenceLoss:
    """A loss of the family and what it is computed from."""

    formula: LossFormula
    # True: its scores are log-ratios to a reference model; False: the policy's own mean
    # log-probabilities (no reference copy, no reference pass).
    reference: bool
    # True: always per-token means; False: summed or averaged as `dpo.logp` says.
    length_normalised: bool
    label_smoothing: bool  # whether `label_smoothing` means anything to it


LOSSES: Mapping[str, PreferenceLoss] = {
    "sigmoid": PreferenceLoss(sigmoid_loss, True, False, True),
    "ipo": PreferenceLoss(ipo_loss, True, False, False),
    "hinge": PreferenceLoss(hinge_loss, True, False, False),
    "simpo": PreferenceLoss(simpo_loss, False, True, True),
    "orpo": PreferenceLoss(orpo_loss, False, True, False),
}


def preference_loss(name: str) -> PreferenceLoss:
    """The loss called `name`; InvalidInput naming the choices for any other name."""
    try:
        return LOSSES[name]
    except KeyError:
        raise InvalidInput(
            f"unknown dpo.loss {name!r}; choose one of {', '.join(LOSSES)}"
        ) from None


def check_loss_options(name: str, options: LossOptions) -> None:
    """Refuses options the loss `name` cannot use or values outside their range."""
    loss = preference_loss(name)
    if not 0 <= options.label_smoothing < 0.5:
        raise InvalidInput(
            f"dpo.label_smoothing must be in [0, 0.5), got {options.label_smoothing}"
        )
    if options.label_smoothing and not loss.label_smoothing:
        raise InvalidInput(
            f"dpo.label_smoothing={options.label_smoothing} does nothing with dpo.loss={name}; "
            "use it with sigmoid or simpo, or set it to 0"
        )
    if options.beta <= 0 or options.sft_weight < 0 or options.orpo_lambda < 0:
        raise InvalidInput(
            f"dpo.beta ({options.beta}) must be > 0, dpo.sft_weight ({options.sft_weight}) and "
            f"dpo.orpo_lambda ({options.orpo_lambda}) >= 0"
        )


def pair_losses(
    name: str,
    options: LossOptions,
    policy: tuple[Tensor, Tensor],
    reference: tuple[Tensor, Tensor] | None,
    chosen_mean_logps: Tensor,
) -> PreferenceLosses:
    """The loss `name` of each pair plus `sft_weight` × the chosen answer's NLL per token.

    `policy` and `reference`: the (chosen, rejected) log-probabilities the loss is computed from
    (summed or per-token means, see `PreferenceLoss`); `reference` None for a reference-free loss.
    `chosen_mean_logps`: the policy's mean log-probability per chosen-answer token.
    """
    loss = preference_loss(name)
    chosen, rejected = policy
    if loss.reference:
        if reference is None:
            raise ValueError(f"dpo.loss={name} needs the reference's log-probabilities")
        chosen, rejected = chosen - reference[0], rejected - reference[1]
    losses = loss.formula(chosen, rejected, options)
    if options.sft_weight:
        losses = losses - options.sft_weight * chosen_mean_logps
    beta = options.beta
    return PreferenceLosses(losses, beta * chosen.detach(), beta * rejected.detach())
