from __future__ import annotations

import copy
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from lit_sft.data.encoding import EncodedEntry
from lit_sft.data.preference import EncodedPair, collate_preferences
from lit_sft.files import write_json_atomic
from lit_sft.lora import LoRAConfig, add_adapters
from lit_sft.model import GPT
from lit_sft.run_dir import RunDir
from lit_sft.tokenizer import IGNORE_INDEX
from lit_sft.training.dpo import METRICS, DPOModule, pair_metric_sums
from lit_sft.training.losses import sequence_logps
from lit_sft.training.preference_losses import LossOptions, PreferenceLosses, pair_losses
from tests.helpers.dpo import CONFIG, MODEL_CONFIG, constant_logits_model


def pairs(generator: torch.Generator, lengths: list[tuple[int, int, int]]) -> dict:
    """Pairs of (prompt, chosen, rejected) lengths with random tokens below 100 (100 pads)."""
    encoded = []
    for index, (prompt, chosen, rejected) in enumerate(lengths):
        tokens = torch.randint(0, 100, (prompt + chosen + rejected,), generator=generator).tolist()
        head = tokens[:prompt]
        encoded.append(
            EncodedPair(
                index,
                EncodedEntry(head + tokens[prompt : prompt + chosen], prompt),
                EncodedEntry(head + tokens[prompt + chosen :], prompt),
            )
        )
    return collate_preferences(encoded, pad_id=100)


def dpo_loss(
    pc: torch.Tensor,
    pr: torch.Tensor,
    rc: torch.Tensor,
    rr: torch.Tensor,
    beta: float = 0.1,
    label_smoothing: float = 0.0,
) -> PreferenceLosses:
    """The sigmoid (DPO) loss of the family from policy and reference log-probabilities."""
    options = LossOptions(beta=beta, label_smoothing=label_smoothing)
    return pair_losses("sigmoid", options, (pc, pr), (rc, rr), pc)


def test_loss_is_log_2_with_zero_margin_when_policy_is_reference() -> None:
    logps = torch.tensor([-3.0, -7.5])
    out = dpo_loss(logps, logps - 2, logps, logps - 2, beta=0.1)
    torch.testing.assert_close(out.losses, torch.full((2,), math.log(2)))
    assert out.chosen_rewards.tolist() == out.rejected_rewards.tolist() == [0.0, 0.0]


def test_loss_matches_the_hand_computed_docstring_example() -> None:
    one = torch.tensor
    out = dpo_loss(one([-1.0]), one([-3.0]), one([-2.0]), one([-2.0]), beta=0.5)
    assert out.losses.item() == pytest.approx(math.log(1 + math.exp(-1)), abs=1e-7)  # 0.3133
    assert (out.chosen_rewards.item(), out.rejected_rewards.item()) == (0.5, -0.5)
    smoothed = dpo_loss(one([-1.0]), one([-3.0]), one([-2.0]), one([-2.0]), 0.5, 0.1)
    # 0.9·log(1 + e⁻¹) + 0.1·log(1 + e¹)
    assert smoothed.losses.item() == pytest.approx(0.9 * 0.3132617 + 0.1 * 1.3132617, abs=1e-6)


def test_default_beta_is_the_books_0_1() -> None:
    one = torch.tensor
    out = dpo_loss(one([-1.0]), one([-3.0]), one([-2.0]), one([-2.0]))
    # z = 0.1·((−1 + 2) − (−3 + 2)) = 0.2; log(1 + e^−0.2) = 0.5981389
    assert out.losses.item() == pytest.approx(0.5981389, abs=1e-6)
    assert out.chosen_rewards.item() == pytest.approx(0.1)
    assert out.rejected_rewards.item() == pytest.approx(-0.1)


@pytest.mark.parametrize("logp", ["sum", "mean"])
def test_dpo_loss_of_a_tiny_pair_is_the_hand_computed_one(logp: str) -> None:
    # Policy: logits (0, 0) over tokens 0 and 1, so every target has log-probability −log 2.
    # Reference: logits (log 3, 0): token 0 has log(3/4), token 1 log(1/4); the rest ~ −1e4.
    policy_module = DPOModule(MODEL_CONFIG, beta=0.5, logp=logp)
    policy_module.model = constant_logits_model([0.0, 0.0])
    policy_module._frozen.append(constant_logits_model([math.log(3), 0.0]))
    # Prompt [1], chosen [0, 0] + end-of-text, rejected [1] + end-of-text; end-of-text = pad = 1.
    pair = EncodedPair(0, EncodedEntry([1, 0, 0], 1), EncodedEntry([1, 1], 1))
    batch = collate_preferences([pair], pad_id=1)
    out, policy = policy_module.preference_losses(batch)
    n_chosen, n_rejected = 3, 2  # targets: chosen 0, 0, 1; rejected 1, 1
    ref_chosen = 2 * math.log(3 / 4) + math.log(1 / 4)
    ref_rejected = 2 * math.log(1 / 4)
    if logp == "sum":
        pc, pr, rc, rr = -3 * math.log(2), -2 * math.log(2), ref_chosen, ref_rejected
    else:
        pc, pr = -math.log(2), -math.log(2)
        rc, rr = ref_chosen / n_chosen, ref_rejected / n_rejected
    z = 0.5 * ((pc - rc) - (pr - rr))
    assert policy.tolist() == pytest.approx([pc, pr], abs=1e-5)
    assert out.losses.item() == pytest.approx(math.log(1 + math.exp(-z)), abs=1e-5)
    assert out.chosen_rewards.item() == pytest.approx(0.5 * (pc - rc), abs=1e-5)


def test_sequence_logps_equal_the_log_softmax_of_full_logits() -> None:
    torch.manual_seed(0)
    model = GPT(CONFIG)
    batch = pairs(torch.Generator().manual_seed(1), [(3, 4, 2), (5, 1, 6)])
    logprobs = F.log_softmax(model(batch["input_ids"]), dim=-1)
    keep = batch["targets"] != IGNORE_INDEX
    gathered = logprobs.gather(-1, batch["targets"].clamp(min=0).unsqueeze(-1)).squeeze(-1)
    expected = (gathered * keep).sum(dim=1)
    torch.testing.assert_close(
        sequence_logps(model, batch["input_ids"], batch["targets"]), expected
    )
    torch.testing.assert_close(
        sequence_logps(model, batch["input_ids"], batch["targets"], mean=True),
        expected / keep.sum(dim=1),
    )


def test_mean_sequence_logps_of_one_target_and_of_none() -> None:
    # Logits (0, 0) over tokens 0 and 1: each target 0 or 1 has log-probability −log 2.
    model = constant_logits_model([0.0, 0.0])
    input_ids = torch.tensor([[1, 0, 1], [0, 1, 0]])
    targets = torch.tensor([[IGNORE_INDEX, 1, IGNORE_INDEX], [IGNORE_INDEX] * 3])
    logps = sequence_logps(model, input_ids, targets, mean=True)
    assert logps.tolist() == pytest.approx([-math.log(2), 0.0], abs=1e-6)


def gradients(module: DPOModule, batch: dict, micro_batch_size: int | None) -> list[torch.Tensor]:
    module.hparams.micro_batch_size = micro_batch_size
    module.model.zero_grad()
    module.backward_sums(batch, 1 / (batch["input_ids"].shape[0] // 2))
    return [p.grad.clone() for p in module.model.parameters()]


@pytest.mark.parametrize("logp", ["sum", "mean"])
def test_micro_batches_give_the_whole_batch_gradient(logp: str) -> None:
    torch.manual_seed(0)
    module = DPOModule(MODEL_CONFIG, logp=logp)
    module.configure_model()  # the frozen reference: the initial weights
    with torch.no_grad():  # a policy that differs from its reference
        for p in module.model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    lengths = [(3, 2, 30), (20, 5, 1), (2, 3, 4), (9, 12, 2)]
    batch = pairs(torch.Generator().manual_seed(2), lengths)
    whole = gradients(module, batch, None)
    for size in (1, 2):
        for full, micro in zip(whole, gradients(module, batch, size), strict=True):
            assert (micro - full).abs().max() <= 1e-6
    # The whole-batch gradient itself: that of the plain mean of the pairs' losses.
    module.model.zero_grad()
    out, _ = module.preference_losses(batch)
    out.losses.mean().backward()
    for full, ref in zip(whole, (p.grad for p in module.model.parameters()), strict=True):
        assert (full - ref).abs().max() <= 1e-6
    assert max(g.abs().max() for g in whole) > 1e-3  # not all zero


def test_bad_loss_options_are_named() -> None:
    with pytest.raises(ValueError, match="unknown dpo.logp 'avg'; valid: sum, mean"):
        DPOModule(MODEL_CONFIG, logp="avg")
    with pytest.raises(ValueError, match="dpo.label_smoothing must be in"):
        DPOModule(MODEL_CONFIG, label_smoothing=0.5)


def test_lora_reference_is_the_base_model_without_a_copy() -> None:
    torch.manual_seed(0)
    module = DPOModule(MODEL_CONFIG)
    base = copy.deepcopy(module.model).requires_grad_(False)
    add_adapters(module.model, LoRAConfig(rank=2, alpha=2.0, dropout=0.0))
    with torch.no_grad():  # adapters start as the identity; make the policy differ from its base
        for p in module.model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.1)
    module.configure_model()
    assert module._frozen == []  # no second copy of the weights
    batch = pairs(torch.Generator().manual_seed(3), [(3, 4, 2), (5, 1, 6)])
    expected = sequence_logps(base, batch["input_ids"], batch["targets"])
    assert (module.reference_logps(batch) - expected).abs().max() <= 1e-6
    policy = module.logps(module.model, batch)
    assert (policy - expected).abs().max() > 1e-3  # the adapters are back on afterwards


def test_pair_metric_sums_by_hand() -> None:
    out = PreferenceLosses(
        losses=torch.tensor([0.5, 1.0, 0.25]),
        chosen_rewards=torch.tensor([0.5, -0.25, 0.75]),
        rejected_rewards=torch.tensor([0.25, 0.5, 0.75]),  # the third pair: a tie, not a win
    )
    policy = torch.tensor([-1.0, -2.0, -3.0, -4.0, -5.0, -6.0])  # chosen, rejected, ...
    sums = dict(zip(METRICS, pair_metric_sums(out, policy).tolist(), strict=True))
    assert sums == {
        "loss": 1.75,
        "rewards/chosen": 1.0,
        "rewards/rejected": 1.5,
        "rewards/margin": -0.5,
        "rewards/accuracy": 1.0,
        "logps/chosen": -9.0,
        "logps/rejected": -12.0,
    }


def softplus(x: float) -> float:
    return math.log(1 + math.exp(x))


# Prompt [1]; pair 0: chosen [0, 0], rejected [1]; pair 1: chosen [1], rejected [0, 1, 0];
# end-of-text = pad = 1 is a target too. Under constant_logits_model([0, 0]) every target has
# log-probability −log 2; the reference's are given (precomputed).
TABLE_PAIRS = [
    EncodedPair(0, EncodedEntry([1, 0, 0], 1), EncodedEntry([1, 1], 1)),
    EncodedPair(1, EncodedEntry([1, 1], 1), EncodedEntry([1, 0, 1, 0], 1)),
]
POLICY = [(-3 * math.log(2), -2 * math.log(2)), (-2 * math.log(2), -4 * math.log(2))]
REFERENCE = [(-1.0, -2.0), (-3.0, -0.5)]


def table_module() -> DPOModule:
    """β 0.5, label smoothing 0.25, reference log-probabilities precomputed for both splits."""
    module = DPOModule(MODEL_CONFIG, beta=0.5, label_smoothing=0.25, precompute_reference=True)
    module.model = constant_logits_model([0.0, 0.0])
    module._table = {split: torch.tensor(REFERENCE) for split in ("train", "val")}
    return module


def hand_metrics(pair_ids: list[int]) -> tuple[list[float], list[float]]:
    """By hand, for TABLE_PAIRS under table_module: each pair's loss, and the sums of METRICS."""
    rewards = [
        (0.5 * (POLICY[i][0] - REFERENCE[i][0]), 0.5 * (POLICY[i][1] - REFERENCE[i][1]))
        for i in pair_ids
    ]
    losses = [0.75 * softplus(r - c) + 0.25 * softplus(c - r) for c, r in rewards]
    chosen, rejected = (sum(r[k] for r in rewards) for k in (0, 1))
    sums = [
        sum(losses),
        chosen,
        rejected,
        chosen - rejected,
        sum(float(c > r) for c, r in rewards),
        sum(POLICY[i][0] for i in pair_ids),
        sum(POLICY[i][1] for i in pair_ids),
    ]
    return losses, sums


def record_logs(module: DPOModule) -> dict[str, tuple[float, bool]]:
    """What the module logs from now on: name -> (value, prog_bar)."""
    logged: dict[str, tuple[float, bool]] = {}

    def log(name: str, value: torch.Tensor, prog_bar: bool = False) -> None:
        logged[name] = (value.item(), prog_bar)

    module.log = log
    return logged


def test_precomputed_reference_rows_feed_each_micro_batch_loss() -> None:
    module = table_module()
    module.hparams.micro_batch_size = 1  # one pair per backward
    module._frozen.clear()  # the reference is the table alone
    batch = collate_preferences([TABLE_PAIRS[1], TABLE_PAIRS[0]], pad_id=1)  # rows by pair_index
    losses, expected = hand_metrics([1, 0])
    backwards: list[float] = []
    sums = module.backward_sums(batch, 0.5, lambda loss: backwards.append(loss.item()))
    assert backwards == pytest.approx([0.5 * loss for loss in losses], abs=1e-6)
    assert sums.tolist() == pytest.approx(expected, abs=1e-5)
    with pytest.raises(RuntimeError, match="the reference model was released after precomputing"):
        module.reference_logps(batch)  # no split: the live reference, released


def test_validation_logs_the_means_over_its_pairs() -> None:
    module = table_module()
    logged = record_logs(module)
    module.trainer = SimpleNamespace(
        strategy=SimpleNamespace(reduce=lambda totals, reduce_op: totals)
    )
    module.on_validation_epoch_start()
    module.validation_step(collate_preferences([TABLE_PAIRS[1]], pad_id=1), 0)  # a single pair
    module.on_validation_epoch_end()
    _, expected = hand_metrics([1])
    assert logged == {
        f"val/{name}": (pytest.approx(value, abs=1e-5), False)
        for name, value in zip(METRICS, expected, strict=True)
    }


def test_only_the_loss_goes_to_the_progress_bar() -> None:
    module = DPOModule(MODEL_CONFIG)
    logged = record_logs(module)
    module._log_metrics("train", torch.arange(7.0), prog_bar=True)
    module._log_metrics("val", torch.arange(7.0))
    assert logged == {
        **{f"train/{name}": (float(i), name == "loss") for i, name in enumerate(METRICS)},
        **{f"val/{name}": (float(i), False) for i, name in enumerate(METRICS)},
    }


def test_reference_table_of_each_loader_in_its_order() -> None:
    module = DPOModule(MODEL_CONFIG)
    module._frozen.append(constant_logits_model([0.0, 0.0]))  # the reference: POLICY's numbers
    batches = [collate_preferences([pair], pad_id=1) for pair in TABLE_PAIRS]
    table = module.compute_reference_table({"train": batches, "val": []})
    assert table["train"].tolist() == [pytest.approx(row, abs=1e-5) for row in POLICY]
    assert table["val"].shape == (0, 2)  # an empty loader: no pairs
    assert module._frozen == [] and module._table is table


def test_reference_is_a_frozen_copy_of_the_initial_weights() -> None:
    module = DPOModule(MODEL_CONFIG)
    module.configure_model()
    (frozen,) = module._frozen
    assert frozen is not module.model and not frozen.training
    assert not any(p.requires_grad for p in frozen.parameters())
    for (name, a), (_, b) in zip(
        frozen.state_dict().items(), module.model.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    module.configure_model()  # called again (a resumed run): still the one copy
    assert module._frozen == [frozen]


@pytest.mark.parametrize("precompute", [False, True])
def test_a_saved_reference_table_replaces_the_frozen_copy(tmp_path: Path, precompute: bool) -> None:
    saved = {"train": [[-1.0, -2.0], [-3.0, -4.0]], "val": [[-5.5, -6.0]]}
    write_json_atomic(RunDir(tmp_path).reference_logps, saved)
    module = DPOModule(MODEL_CONFIG, precompute_reference=precompute)
    module.trainer = SimpleNamespace(default_root_dir=str(tmp_path))
    module.configure_model()
    if precompute:
        assert module._frozen == []
        assert {split: rows.tolist() for split, rows in module._table.items()} == saved
    else:  # the option off: the file is ignored
        assert len(module._frozen) == 1 and module._table == {}


def test_precompute_without_a_saved_table_keeps_a_frozen_copy(tmp_path: Path) -> None:
    module = DPOModule(MODEL_CONFIG, precompute_reference=True)
    module.configure_model()  # no trainer yet: nothing to read
    assert len(module._frozen) == 1
    module = DPOModule(MODEL_CONFIG, precompute_reference=True)
    module.trainer = SimpleNamespace(default_root_dir=str(tmp_path))  # a run folder without one
    module.configure_model()
    assert len(module._frozen) == 1 and module._table == {}
