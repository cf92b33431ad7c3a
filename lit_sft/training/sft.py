"""The SFT LightningModule: token-weighted cross-entropy, AdamW, micro-batches, val metrics."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import lightning as L
import torch
from torch import Tensor
from torch.optim.lr_scheduler import LambdaLR

from lit_sft.errors import InvalidInput
from lit_sft.lora import adapter_config, has_adapters
from lit_sft.model import GPT, GPTConfig
from lit_sft.tokenizer import IGNORE_INDEX
from lit_sft.training.losses import Batch, sft_step, token_losses
from lit_sft.training.schedules import check_schedule, warmup_cosine


class InstructionModule(L.LightningModule):
    """GPT-2 finetuned on instruction batches with AdamW."""

    def __init__(
        self,
        model_config: dict[str, Any],
        lr: float = 5e-5,
        weight_decay: float = 0.1,
        betas: tuple[float, float] = (0.9, 0.999),
        micro_batch_size: int | None = None,
        grad_clip: float | None = None,
        lr_schedule: str = "constant",
        warmup_steps: int = 0,
        min_lr_ratio: float = 0.1,
        compile: bool = False,
        activation_checkpointing: bool = False,
    ) -> None:
        """`micro_batch_size` splits each batch for gradient accumulation (None: whole batch);
        `activation_checkpointing` recomputes each block in backward instead of keeping its
        activations."""
        super().__init__()
        check_schedule(lr_schedule)
        self.save_hyperparameters()
        # Optimisation is manual so gradient accumulation can weight every target token equally.
        self.automatic_optimization = False
        self.model = GPT(GPTConfig(**model_config))
        self.model.activation_checkpointing = activation_checkpointing
        # Summed loss and token counts of the validation run so far: loss, tokens, response loss,
        # response tokens.
        self.val_totals = torch.zeros(4)
        self.tokens_seen = 0
        # The weights the model started from, recorded in checkpoints: a LoRA checkpoint holds
        # only the adapters, and a resumed run must rebuild the same base under them.
        self.base_weights: str | None = None

    def configure_model(self) -> None:
        if self.hparams.compile:
            for block in self.model.blocks:
                block.compile(dynamic=True)

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        # The fused kernel beats the per-tensor loop PyTorch otherwise uses on CPUs (~1.5x here).
        # Frozen base weights (LoRA) get neither gradients nor AdamW state.
        optimizer = torch.optim.AdamW(
            [p for p in self.model.parameters() if p.requires_grad],
            lr=hp.lr,
            weight_decay=hp.weight_decay,
            betas=tuple(hp.betas),
            fused=self.device.type in ("cpu", "cuda"),
        )

        def multiplier(step: int) -> float:
            if hp.lr_schedule == "constant":
                return 1.0
            # Asked lazily: estimating the total before training would build the train dataloader
            # before a resumed run has restored its position in the epoch.
            total = self.trainer.estimated_stepping_batches if step > hp.warmup_steps else step + 1
            return warmup_cosine(step, hp.warmup_steps, int(total), hp.min_lr_ratio)

        return {"optimizer": optimizer, "lr_scheduler": LambdaLR(optimizer, multiplier)}

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        optimizer, scheduler = self.optimizers(), self.lr_schedulers()
        strategy = self.trainer.strategy
        local_tokens = (batch["targets"] != IGNORE_INDEX).sum()
        global_tokens = strategy.reduce(local_tokens.float(), reduce_op="sum")
        # DDP averages gradients over ranks, so scaling by world_size / global tokens makes the
        # result the mean over every target token of the global batch.
        scale = self.trainer.world_size / global_tokens.clamp(min=1)
        loss_sum = sft_step(
            self.model,
            optimizer,
            batch,
            scale=scale,
            micro_batch_size=self.hparams.micro_batch_size,
            backward=self.manual_backward,
            before_step=self._clip_gradients,
            take_step=bool(global_tokens > 0),
        )
        scheduler.step()
        loss = strategy.reduce(loss_sum, reduce_op="sum") / global_tokens.clamp(min=1)
        self.tokens_seen += batch["input_ids"].numel() * self.trainer.world_size
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/tokens_seen", float(self.tokens_seen))
        self.log("train/lr", scheduler.get_last_lr()[0])
        return loss

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        losses, keep = token_losses(self.model, batch["input_ids"], batch["targets"])
        positions = torch.arange(keep.shape[1], device=keep.device)
        is_response = (positions >= batch["response_start"].unsqueeze(1))[keep]
        step_totals = [losses.sum(), losses.numel(), losses[is_response].sum(), is_response.sum()]
        self.val_totals += torch.stack(
            [torch.as_tensor(t, device=self.device) for t in step_totals]
        )

    def on_validation_epoch_start(self) -> None:
        self.val_totals = torch.zeros(4, dtype=torch.float64, device=self.device)

    def on_validation_epoch_end(self) -> None:
        loss, tokens, response_loss, response_tokens = self.trainer.strategy.reduce(
            self.val_totals, reduce_op="sum"
        )
        # Token-weighted over every batch validated, not a mean of per-batch means.
        self.log("val/loss", loss / tokens.clamp(min=1), prog_bar=True)
        self.log("val/response_loss", response_loss / response_tokens.clamp(min=1))

    def _clip_gradients(self) -> None:
        if self.hparams.grad_clip:
            self.clip_gradients(self.optimizers(), gradient_clip_val=self.hparams.grad_clip)

    def trainable_state_names(self) -> set[str]:
        return {f"model.{name}" for name, p in self.model.named_parameters() if p.requires_grad}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["tokens_seen"] = self.tokens_seen
        checkpoint["base_weights"] = self.base_weights
        # Adapter dropout draws from the global generator; restoring it makes a resume exact.
        checkpoint["torch_rng_state"] = torch.get_rng_state()
        if has_adapters(self.model):
            checkpoint["adapter"] = asdict(adapter_config(self.model))
            trainable = self.trainable_state_names()
            state = checkpoint["state_dict"]
            checkpoint["state_dict"] = {k: v for k, v in state.items() if k in trainable}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.tokens_seen = checkpoint.get("tokens_seen", 0)
        if "torch_rng_state" in checkpoint:
            torch.set_rng_state(checkpoint["torch_rng_state"])
        if not has_adapters(self.model):
            return
        if checkpoint.get("base_weights") != self.base_weights:
            raise InvalidInput(
                f"the checkpoint's adapters were trained on base weights "
                f"{checkpoint.get('base_weights')}, this run loads {self.base_weights}; "
                "pass the same model.weights to resume"
            )
        saved, needed = set(checkpoint["state_dict"]), self.trainable_state_names()
        if saved != needed:
            raise InvalidInput(
                f"the checkpoint holds {len(saved)} tensors, the adapters of this run need "
                f"{len(needed)} (e.g. {sorted(needed ^ saved)[:2]}); resume with the run's own "
                "adapter settings"
            )
        # The frozen base came from `base_weights`, not from the checkpoint.
        self.strict_loading = False
