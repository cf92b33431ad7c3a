"""The DPO LightningModule: a policy trained on preference pairs with a loss of the DPO family,
against a frozen reference (or, for SimPO and ORPO, none)."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from lit_sft.errors import InvalidInput
from lit_sft.files import write_json_atomic
from lit_sft.lora import disable_adapters, has_adapters
from lit_sft.model import GPT
from lit_sft.run_dir import RunDir, read_json
from lit_sft.tokenizer import IGNORE_INDEX
from lit_sft.training.base import TrainingModule
from lit_sft.training.losses import Batch, sequence_logps
from lit_sft.training.preference_losses import (
    LossOptions,
    PreferenceLosses,
    check_loss_options,
    pair_losses,
    preference_loss,
)

LOGP_REDUCTIONS = ("sum", "mean")
# Logged as `train/<name>` and `val/<name>`: means over the pairs of a step or a validation.
METRICS = (
    "loss",
    "rewards/chosen",
    "rewards/rejected",
    "rewards/margin",
    "rewards/accuracy",
    "logps/chosen",
    "logps/rejected",
)


def pair_metric_sums(out: PreferenceLosses, policy: Tensor) -> Tensor:
    """The sums over pairs of each of METRICS; `policy` holds the rows' log-probabilities."""
    chosen, rejected = out.chosen_rewards, out.rejected_rewards
    values = (
        out.losses.detach(),
        chosen,
        rejected,
        chosen - rejected,
        (chosen > rejected).float(),
        policy[0::2].detach(),
        policy[1::2].detach(),
    )
    return torch.stack([v.sum() for v in values])


def lora_reference(model: GPT) -> Callable[[], contextlib.AbstractContextManager] | None:
    """With LoRA adapters, the reference is the base model: the adapters switched off."""
    return (lambda: disable_adapters(model)) if has_adapters(model) else None


def check_options(logp: str, loss: str, options: LossOptions, precompute: bool) -> None:
    """Refuses an unknown `logp` reduction or loss, and options the loss cannot use."""
    if logp not in LOGP_REDUCTIONS:
        raise InvalidInput(f"unknown dpo.logp {logp!r}; valid: {', '.join(LOGP_REDUCTIONS)}")
    check_loss_options(loss, options)
    if precompute and not preference_loss(loss).reference:
        raise InvalidInput(
            f"dpo.precompute_reference=true does nothing with dpo.loss={loss} (it has no "
            "reference model); set it to false"
        )


class DPOModule(TrainingModule):
    """Direct Preference Optimization of GPT-2 with AdamW (defaults: the book's recipe)."""

    metrics = METRICS
    val_metrics = METRICS
    rows_per_example = 2  # a pair's chosen and rejected rows, never split

    def __init__(
        self,
        model_config: dict[str, Any],
        lr: float = 5e-6,
        weight_decay: float = 0.01,
        beta: float = 0.1,
        logp: str = "sum",
        label_smoothing: float = 0.0,
        precompute_reference: bool = False,
        loss: str = "sigmoid",
        sft_weight: float = 0.0,
        simpo_gamma: float = 0.5,
        orpo_lambda: float = 0.1,
        **optimization: Any,
    ) -> None:  # pragma: no mutate block (save_hyperparameters reads the `__init__` frames)
        """`logp`: a response's log-probability summed over its tokens (DPO, TRL) or their mean
        (the book); `precompute_reference`: reference log-probabilities computed once, kept in
        the run folder; `loss`, `sft_weight`, `simpo_gamma`, `orpo_lambda`: the loss family
        (`lit_sft.training.preference_losses`). `optimization`: TrainingModule's other options."""
        self.loss_options = LossOptions(beta, label_smoothing, simpo_gamma, orpo_lambda, sft_weight)
        check_options(logp, loss, self.loss_options, precompute_reference)
        super().__init__(model_config, lr=lr, weight_decay=weight_decay, **optimization)
        # The frozen copy lives outside the module: not trained, not in checkpoints.
        self._frozen: list[GPT] = []
        # Precomputed reference log-probabilities per split, (pairs, 2): chosen, rejected.
        self._table: dict[str, Tensor] = {}

    def setup(self, stage: str) -> None:
        if not hasattr(self.trainer.datamodule, "pairs_loader"):
            raise InvalidInput(
                "method=dpo trains on preference pairs: add data=preference "
                "({instruction, input, chosen, rejected} entries)"
            )

    def configure_model(self) -> None:
        super().configure_model()
        # Runs before a resumed run restores its checkpoint: the policy still holds the initial
        # weights, the ones the reference keeps.
        if not self.needs_reference or self._frozen or lora_reference(self.model):
            return
        if self._read_table():
            return
        self._frozen.append(copy.deepcopy(self.model).requires_grad_(False).eval())

    @property
    def needs_reference(self) -> bool:
        """Whether the loss compares with a reference model (reference-free ones keep none)."""
        return preference_loss(self.hparams.loss).reference

    def logps(self, model: GPT, batch: Batch) -> Tensor:
        """Each row's log-probability of its answer under `model`, per `logp`."""
        mean = self.hparams.logp == "mean"
        return sequence_logps(model, batch["input_ids"], batch["targets"], mean)

    @torch.no_grad()
    def reference_logps(self, batch: Batch, split: str | None = None) -> Tensor:
        """The reference's log-probabilities of the rows (precomputed ones where `split` has)."""
        if self.hparams.precompute_reference and split is not None:
            table = self._table.get(split)
            if table is None:
                table = self._precompute()[split]
            return table.to(self.device)[batch["pair_index"][0::2]].flatten()
        with self._reference() as reference:
            return self.logps(reference, batch)

    @contextlib.contextmanager
    def _reference(self) -> Iterator[GPT]:
        disabled = lora_reference(self.model)
        if disabled is not None:
            with disabled():
                yield self.model
            return
        if not self._frozen:
            raise RuntimeError("the reference model was released after precomputing")
        yield self._frozen[0].to(self.device)

    def _table_path(self) -> Path:
        return RunDir(self.trainer.default_root_dir).reference_logps

    def _read_table(self) -> bool:
        """Loads the run folder's precomputed reference log-probabilities; whether there are any."""
        if not self.hparams.precompute_reference or self._trainer is None:
            return False
        saved = read_json(self._table_path())
        if saved is not None:
            self._table = {split: torch.tensor(rows) for split, rows in saved.items()}
        return saved is not None

    def compute_reference_table(self, loaders: dict[str, Iterable[Batch]]) -> dict[str, Tensor]:
        """The reference's log-probabilities of every pair each loader yields, in its order, kept
        for `reference_logps(batch, split)`; the frozen copy is released."""
        for split, loader in loaders.items():
            rows = [
                self.reference_logps(self.transfer_batch_to_device(batch, self.device, 0))
                for batch in loader
            ]
            self._table[split] = torch.cat(rows).view(-1, 2).cpu() if rows else torch.zeros(0, 2)
        self._frozen.clear()  # each step now runs the policy only
        return self._table

    def _precompute(self) -> dict[str, Tensor]:
        """The reference's log-probabilities of every train and validation pair, saved once."""
        datamodule = self.trainer.datamodule
        table = self.compute_reference_table(
            {s: datamodule.pairs_loader(s) for s in ("train", "val")}
        )
        if self.trainer.is_global_zero:
            write_json_atomic(self._table_path(), {k: v.tolist() for k, v in table.items()})
        return table

    def preference_losses(
        self, batch: Batch, split: str | None = None
    ) -> tuple[PreferenceLosses, Tensor]:
        """The losses of a batch's pairs, and the policy's log-probabilities of its rows (as the
        loss reads them: summed or per-token means)."""
        hp = self.hparams
        sums = sequence_logps(self.model, batch["input_ids"], batch["targets"])
        means = sums / (batch["targets"] != IGNORE_INDEX).sum(dim=1).clamp(min=1)
        loss = preference_loss(hp.loss)
        policy = means if loss.length_normalised or hp.logp == "mean" else sums
        reference = None
        if loss.reference:
            rows = self.reference_logps(batch, split)
            reference = (rows[0::2], rows[1::2])
        out = pair_losses(
            hp.loss, self.loss_options, (policy[0::2], policy[1::2]), reference, means[0::2]
        )
        return out, policy

    def batch_weight(self, batch: Batch) -> Tensor:
        return torch.tensor(batch["input_ids"].shape[0] // 2, device=batch["input_ids"].device)

    def train_sums(self, batch: Batch) -> tuple[Tensor, Tensor]:
        out, policy = self.preference_losses(batch, "train")
        return out.losses.sum(), pair_metric_sums(out, policy)

    def val_sums(self, batch: Batch) -> tuple[Tensor, Tensor]:
        out, policy = self.preference_losses(batch, "val")
        sums = pair_metric_sums(out, policy)
        return sums, torch.full_like(sums, len(out.losses))
