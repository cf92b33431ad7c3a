"""Training steps of the book and of lit_sft on the same weights and batches, timed per step.

Each side maps a `Spec` (plain values) to a `Run` dict, so it can run in a fresh process
(`common.in_child`) whose peak memory is its own. The book's side is its `train_model_simple`'s
body; lit_sft's is `SFTModule.training_step` without the Trainer (`sft_step`), set up as train.py.
"""

from __future__ import annotations

import hashlib
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from functools import partial
from operator import itemgetter
from typing import Any

import lightning as L
import torch
from torch import Tensor

from benchmarks.common import BOOK_ALLOWED_MAX_LENGTH, Book, OtherCpu, peak_mib, reset_peak
from lit_sft.allocator import keep_freed_memory
from lit_sft.checkpoints import load_weights
from lit_sft.data.packing import pack_batch
from lit_sft.data.sft import InstructionDataModule
from lit_sft.lora import LoRAConfig, add_adapters, trainable_parameters
from lit_sft.tokenizer import IGNORE_INDEX
from lit_sft.training.sft import SFTModule
from lit_sft.training.steps import sft_step

# One optimizer step on a batch; it calls its second argument right before `optimizer.step()`.
StepFn = Callable[[Any, Callable[[], None]], Tensor]


@dataclass(frozen=True)
class Spec:
    """What a side needs to run; `random_length`: random token rows of that length, every
    position a target, instead of the book's entries. The last fields choose lit_sft's variant."""

    book_dir: str | None
    data: str
    weights: str
    config: dict[str, Any]
    batch_size: int
    steps: int
    shuffle: bool = False
    mask_instructions: bool = False
    random_length: int | None = None
    threads: int | None = None
    lr: float = 5e-5
    weight_decay: float = 0.1
    compile: bool = False
    packing: bool = False
    checkpointing: bool = False
    precision: str = "32-true"
    lora_rank: int | None = None
    lora_alpha: float = 32.0
    keep_freed_memory: bool = True


@dataclass
class Run:
    """Per-step measurements of one side."""

    side: str
    step_s: list[float] = field(default_factory=list)
    optimizer_s: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    padded_tokens: list[int] = field(default_factory=list)
    target_tokens: list[int] = field(default_factory=list)
    digests: list[str] = field(default_factory=list)
    peak_mib: float = 0.0
    train_peak_mib: float | None = None
    other_cpu: float | None = None
    trainable_parameters: int | None = None

    def record(self, inputs: Tensor, targets: Tensor) -> None:
        """Notes a batch's size and fingerprint, so two sides can prove they saw the same."""
        self.padded_tokens.append(inputs.numel())
        self.target_tokens.append(int((targets != IGNORE_INDEX).sum()))
        data = torch.cat([inputs.flatten(), targets.flatten()]).to(torch.int64).numpy().tobytes()
        shape = str((tuple(inputs.shape), tuple(targets.shape))).encode()
        self.digests.append(hashlib.sha256(shape + data).hexdigest()[:16])


def endless(batches: Any) -> Iterator[Any]:
    """Batches of a loader, epoch after epoch."""
    while True:
        yield from batches


def random_batches(spec: Spec) -> list[tuple[Tensor, Tensor]]:
    """`spec.steps` rows of random tokens (seed 0), every position a target."""
    generator = torch.Generator().manual_seed(0)
    shape = (spec.batch_size, spec.random_length + 1)
    rows = [torch.randint(0, 50257, shape, generator=generator) for _ in range(spec.steps)]
    return [(ids[:, :-1], ids[:, 1:]) for ids in rows]


def monitored(run: Run, spec: Spec, body: Callable[[], None]) -> dict[str, Any]:
    """Runs `body` (the timed steps) on `spec.threads` threads with peak memory and other
    processes' CPU share around it."""
    if spec.threads:
        torch.set_num_threads(spec.threads)
    run.peak_mib = peak_mib()
    reset, other = reset_peak(), OtherCpu().start()
    body()
    run.other_cpu = other.stop()
    run.train_peak_mib = peak_mib() if reset else None
    run.peak_mib = max(run.peak_mib, peak_mib())
    return asdict(run)


def time_steps(
    run: Run,
    steps: int,
    batches: Iterator[Any],
    tensors: Callable[[Any], tuple[Tensor, Tensor]],
    step: StepFn,
) -> None:
    """The loop every side shares: next batch, then the side's own whole training step."""
    for _ in range(steps):
        start = time.perf_counter()
        batch = next(batches)
        marks = [start]
        loss = step(batch, lambda marks=marks: marks.append(time.perf_counter()))
        end = time.perf_counter()
        run.step_s.append(end - start)
        run.optimizer_s.append(end - marks[-1])
        run.losses.append(float(loss))
        run.record(*tensors(batch))
        print(f"{run.side:>12} step {len(run.losses) - 1}: loss {run.losses[-1]:.4f} "
              f"{run.step_s[-1]:.3f}s", file=sys.stderr, flush=True)  # fmt: skip


def book_loader(spec: Spec) -> Any:
    """The book's DataLoader over its train split, as its chapter 7 builds it."""
    from torch.utils.data import DataLoader

    book = Book(spec.book_dir)
    chapter, common = book.module("instruction_finetuning"), book.module("bench_common")
    dataset, collate = (
        (chapter.InstructionDatasetWithMasking, chapter.custom_collate_with_masking_fn)
        if spec.mask_instructions
        else (chapter.InstructionDataset, chapter.custom_collate_fn)
    )
    return DataLoader(
        dataset(common.load_splits(spec.data)[0], common.get_tokenizer()),
        batch_size=spec.batch_size,
        collate_fn=partial(collate, device="cpu", allowed_max_length=BOOK_ALLOWED_MAX_LENGTH),
        shuffle=spec.shuffle,
        drop_last=True,
    )


def book_side(spec: Spec) -> dict[str, Any]:
    """The book's data pipeline, model and `train_model_simple` body, timed."""
    if spec.random_length:
        batches = iter(random_batches(spec))
    else:
        loader = book_loader(spec)
        torch.manual_seed(123)  # the book reseeds before its epoch loop (the shuffle order)
        batches = endless(loader)
    book = Book(spec.book_dir)
    model = book.model(spec.config, spec.weights).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=spec.weight_decay)
    calc_loss_batch = book.module("previous_chapters").calc_loss_batch

    def step(batch: tuple[Tensor, Tensor], mark: Callable[[], None]) -> Tensor:
        optimizer.zero_grad()
        loss = calc_loss_batch(*batch, model, "cpu")
        loss.backward()
        mark()
        optimizer.step()
        return loss.detach()

    run = Run("book")
    return monitored(run, spec, lambda: time_steps(run, spec.steps, batches, lambda b: b, step))


def example_lengths(batch: dict[str, Tensor]) -> list[int]:
    """Each row's entry length in a padded batch: through its last counted target."""
    counted = batch["targets"] != IGNORE_INDEX
    last = torch.arange(counted.shape[1]).expand_as(counted).masked_fill(~counted, -1)
    return [max(int(n) + 1, 1) for n in last.max(dim=1).values]


def lit_datamodule(spec: Spec, **options: Any) -> InstructionDataModule:
    """lit_sft's DataModule on the same file, split, batch size and masking as the book."""
    datamodule = InstructionDataModule(
        path=spec.data,
        batch_size=spec.batch_size,
        mask_instructions=spec.mask_instructions,
        allowed_max_length=spec.config["context_length"],
        shuffle=spec.shuffle,
        **options,
    )
    datamodule.setup("fit")
    return datamodule


def lit_name(spec: Spec) -> str:
    """The side's name: lit_sft, or the variant it measures."""
    variants = {
        "compiled": spec.compile,
        "packed": spec.packing,
        "checkpointed": spec.checkpointing,
        spec.precision: spec.precision != "32-true",
        f"lora r{spec.lora_rank}": spec.lora_rank is not None,
    }
    return " ".join(name for name, on in variants.items() if on) or "lit_sft"


def lit_module(spec: Spec) -> SFTModule:
    """The SFT module holding the spec's weights, in its variant, ready to train."""
    module = SFTModule(
        spec.config,
        lr=spec.lr,
        weight_decay=spec.weight_decay,
        compile=spec.compile,
        activation_checkpointing=spec.checkpointing,
    )
    load_weights(module.model, spec.weights)
    if spec.lora_rank is not None:
        # Dropout 0 so that step 0 computes the full model's loss.
        lora = LoRAConfig(rank=spec.lora_rank, alpha=spec.lora_alpha, dropout=0.0)
        add_adapters(module.model, lora)
    module.configure_model()
    return module.train()


def lit_side(spec: Spec) -> dict[str, Any]:
    """lit_sft's batches and training step without the Trainer, timed."""
    if spec.keep_freed_memory:
        keep_freed_memory()
    if spec.random_length:
        batches = iter({"input_ids": x, "targets": y} for x, y in random_batches(spec))
    else:
        batches = endless(lit_datamodule(spec).train_dataloader())
    module = lit_module(spec)
    # Its scheduler is constant by default, so it can be left out.
    optimizer = module.configure_optimizers()["optimizer"]
    bf16 = spec.precision == "bf16-mixed"

    def step(batch: dict[str, Tensor], mark: Callable[[], None]) -> Tensor:
        if spec.packing:  # as `data.packing=true`'s collate packs it, here inside the timed step
            batch = pack_batch(batch, example_lengths(batch), spec.config["context_length"])
        tokens = (batch["targets"] != IGNORE_INDEX).sum().float().clamp(min=1)
        with torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else nullcontext():
            loss_sum = sft_step(
                module.model,
                optimizer,
                batch,
                scale=1 / tokens,
                micro_batch_size=module.hparams.micro_batch_size,
                before_step=mark,
            )
        return loss_sum / tokens

    run = Run(lit_name(spec), trainable_parameters=trainable_parameters(module.model))
    tensors = itemgetter("input_ids", "targets")
    return monitored(run, spec, lambda: time_steps(run, spec.steps, batches, tensors, step))


class StepClock(L.Callback):
    """Times the Trainer from one batch's end to the next, and keeps each step's loss."""

    def __init__(self, run: Run) -> None:
        self.run, self.last = run, 0.0

    def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.last = time.perf_counter()

    def on_train_batch_end(
        self, trainer: L.Trainer, module: L.LightningModule, outputs: Any, batch: Any, index: int
    ) -> None:
        now = time.perf_counter()
        self.run.step_s.append(now - self.last)
        self.last = now
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self.run.losses.append(float(loss))
        self.run.record(batch["input_ids"], batch["targets"])


def lightning_side(spec: Spec) -> dict[str, Any]:
    """The same steps through `Trainer.fit` (no validation, logger or checkpoints), timed."""
    if spec.keep_freed_memory:
        keep_freed_memory()
    module = lit_module(spec)
    run = Run("lightning")
    trainer = L.Trainer(
        accelerator="cpu", max_steps=spec.steps, limit_val_batches=0, num_sanity_val_steps=0,
        logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=[StepClock(run)],
    )  # fmt: skip
    return monitored(run, spec, lambda: trainer.fit(module, datamodule=lit_datamodule(spec)))
