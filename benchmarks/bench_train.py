"""The book's chapter-7 training step against lit_sft's, on the same weights and the same batches.

    python benchmarks/bench_train.py --model gpt2-small --steps 6 [--lightning] [--profile]

One invocation: random GPT-2 weights from the book's model (seed 123) are written once as
Hugging Face-named safetensors; then, each in its own freshly spawned process (so peak memory is
not shared), the book's loop (its GPTModel, InstructionDataset + custom_collate_fn,
calc_loss_batch -> backward -> AdamW step) and lit_sft's (`InstructionDataModule` batches,
`backward_token_mean` -> the module's own AdamW step: `InstructionModule.training_step` without
the Trainer) run the first `--steps` batches in file order; `--lightning` adds `Trainer.fit`.
The book's code is imported from `--ref-dir` (../shared/bench/ref), never copied. Per-step losses
must agree (same weights, same batches); prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor

from lit_sft.allocator import keep_freed_memory
from lit_sft.checkpoints import load_weights
from lit_sft.data.packing import pack_batch
from lit_sft.data.sft import InstructionDataModule
from lit_sft.lora import LoRAConfig, add_adapters, trainable_parameters
from lit_sft.tokenizer import IGNORE_INDEX
from lit_sft.training.sft import InstructionModule
from lit_sft.training.steps import sft_step

REPO = Path(__file__).resolve().parents[1]

# The book's data, code and tokenizer files; $LIT_SFT_SHARED where they lie elsewhere (as in tests).
SHARED = Path(os.environ.get("LIT_SFT_SHARED", REPO.parent / "shared"))
LOSS_TOLERANCE = 1e-3
BOOK_ALLOWED_MAX_LENGTH = 1024  # what the book's chapter 7 passes to its collate


@dataclass(frozen=True)
class Spec:
    """What every side needs to run; plain values, so it crosses into a spawned process."""

    ref_dir: str
    data: str
    weights: str
    config: dict[str, Any]
    batch_size: int
    steps: int
    shuffle: bool = False
    mask_instructions: bool = False
    threads: int | None = None
    profile: bool = False
    compile: bool = False
    packing: bool = False
    lr: float = 5e-5
    weight_decay: float = 0.1


@dataclass
class Run:
    """Per-step measurements of one side, returned from its process as a dict."""

    side: str
    step_s: list[float] = field(default_factory=list)
    data_s: list[float] = field(default_factory=list)
    optimizer_s: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    padded_tokens: list[int] = field(default_factory=list)
    target_tokens: list[int] = field(default_factory=list)
    shapes: list[list[int]] = field(default_factory=list)
    input_digests: list[str] = field(default_factory=list)
    target_digests: list[str] = field(default_factory=list)
    peak_rss_mib: float = 0.0
    train_peak_rss_mib: float | None = None
    other_cpu_frac: float | None = None
    profile: str | None = None

    def record_batch(self, inputs: Tensor, targets: Tensor) -> None:
        """Notes the size and a fingerprint of a batch, so two sides can prove they saw the same."""
        self.padded_tokens.append(inputs.numel())
        self.target_tokens.append(int((targets != IGNORE_INDEX).sum()))
        self.shapes.append(list(inputs.shape))
        self.input_digests.append(digest(inputs))
        self.target_digests.append(digest(targets))


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", default="gpt2-small", choices=["gpt2-small", "gpt2-medium", "gpt2-large"]
    )
    parser.add_argument(
        "--tiny", action="store_true", help="the reference's 4-layer, 256-wide model instead"
    )
    parser.add_argument("--steps", type=int, default=6, help="optimizer steps, warm-up included")
    parser.add_argument("--warmup", type=int, default=2, help="steps left out of the statistics")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--data", default=str(SHARED / "data" / "instruction-data.json"))
    parser.add_argument(
        "--shuffle",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="each side shuffles its own way (then batches differ); default --no-shuffle",
    )
    parser.add_argument("--mask-instructions", action="store_true")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run the sides this many times, in turn, and report each side's fastest round",
    )
    parser.add_argument("--lightning", action="store_true", help="also time the full Trainer")
    parser.add_argument(
        "--compile", action="store_true", help="also time lit_sft with module.compile=true"
    )
    parser.add_argument(
        "--packing", action="store_true", help="also time lit_sft with data.packing=true"
    )
    parser.add_argument("--profile", action="store_true", help="profile one extra step per side")
    parser.add_argument("--ref-dir", default=str(SHARED / "bench" / "ref"))
    return parser.parse_args(argv)


def digest(tensor: Tensor) -> str:
    """A short fingerprint of a tensor's shape and values."""
    data = tensor.detach().to(torch.int64).contiguous().numpy().tobytes()
    return hashlib.sha256(str(tuple(tensor.shape)).encode() + data).hexdigest()[:16]


def import_reference(ref_dir: str) -> None:
    """Makes the book's modules and bench_common importable (it also sets TIKTOKEN_CACHE_DIR)."""
    if ref_dir not in sys.path:
        sys.path.insert(0, ref_dir)


def vm_hwm_mib() -> float:
    """Peak resident memory of this process (VmHWM): after exec, so nothing of the parent's."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM"):
                return int(line.split()[1]) / 1024
    return float("nan")


def in_child(function: Callable[..., Any], *args: Any) -> Any:
    """`function(*args)` in a fresh spawned process, so each side's peak memory is its own."""
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        return pool.submit(function, *args).result()


def save_initial_weights(ref_dir: str, model_name: str, path: str) -> dict[str, Any]:
    """Seeds 123, builds the book's GPTModel and saves it in HF naming; returns its config."""
    import_reference(ref_dir)
    import bench_common as bc
    from previous_chapters import GPTModel

    config = {**bc.BASE_CONFIG, **bc.MODEL_CONFIGS[model_name]}
    torch.manual_seed(123)
    bc.save_hf_safetensors(GPTModel(config), path, config)
    return config


def spec_from_initial_weights(folder: str, ref_dir: str, model_name: str, **settings: Any) -> Spec:
    """Saves the book's seeded model into `folder` (in a child process) and returns the Spec of
    runs that start from it; `settings`: Spec's other fields."""
    weights = str(Path(folder) / "init.safetensors")
    config = in_child(save_initial_weights, ref_dir, model_name, weights)
    return Spec(ref_dir=ref_dir, weights=weights, config=config, **settings)


def endless(loader: Iterable[Any]) -> Iterator[Any]:
    """Batches of `loader`, epoch after epoch."""
    while True:
        yield from loader


# One optimizer step on a batch; it calls its second argument right before `optimizer.step()`.
StepFn = Callable[[Any, Callable[[], None]], Tensor]


def time_steps(
    run: Run,
    batches: Iterator[Any],
    tensors: Callable[[Any], tuple[Tensor, Tensor]],
    step: StepFn,
    steps: int,
) -> None:
    """The loop both sides share: next batch, then the side's own whole training step."""
    for _ in range(steps):
        start = time.perf_counter()
        batch = next(batches)
        loaded = time.perf_counter()
        stepping = [loaded]
        loss = step(batch, lambda marks=stepping: marks.append(time.perf_counter()))
        end = time.perf_counter()
        run.step_s.append(end - start)
        run.data_s.append(loaded - start)
        run.optimizer_s.append(end - stepping[-1])
        run.losses.append(float(loss))
        run.record_batch(*tensors(batch))
        print(
            f"{run.side:>9} step {len(run.losses) - 1}: loss {run.losses[-1]:.4f} "
            f"{run.step_s[-1]:.3f}s",
            file=sys.stderr,
            flush=True,
        )


def measured(run: Run, body: Callable[[], None]) -> dict[str, Any]:
    """Runs `body` (the timed loop) with the peak-memory and other-process monitors around it."""
    import bench_common as bc

    reset = bc.reset_peak_rss()
    monitor = bc.CpuMonitor().start()
    body()
    run.other_cpu_frac = monitor.stop()["other_cpu_frac"]
    run.train_peak_rss_mib = vm_hwm_mib() if reset else None
    run.peak_rss_mib = max(vm_hwm_mib(), run.peak_rss_mib)
    return asdict(run)


def profile_step(batches: Iterator[Any], step: StepFn) -> str:
    """The top operators of one more training step (data loading left out) by self CPU time."""
    from torch.profiler import ProfilerActivity, profile

    batch = next(batches)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step(batch, lambda: None)
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15)


def book_side(spec: Spec) -> dict[str, Any]:
    """The book's data pipeline, model and train_model_simple body, timed."""
    import_reference(spec.ref_dir)
    from functools import partial

    import bench_common as bc
    from instruction_finetuning import (
        InstructionDataset,
        InstructionDatasetWithMasking,
        custom_collate_fn,
        custom_collate_with_masking_fn,
    )
    from previous_chapters import GPTModel, calc_loss_batch
    from torch.utils.data import DataLoader

    if spec.threads:
        torch.set_num_threads(spec.threads)
    train_data = bc.load_splits(spec.data)[0]
    tokenizer = bc.get_tokenizer()
    dataset, collate = (
        (InstructionDatasetWithMasking, custom_collate_with_masking_fn)
        if spec.mask_instructions
        else (InstructionDataset, custom_collate_fn)
    )
    loader = DataLoader(
        dataset(train_data, tokenizer),
        batch_size=spec.batch_size,
        collate_fn=partial(collate, device="cpu", allowed_max_length=BOOK_ALLOWED_MAX_LENGTH),
        shuffle=spec.shuffle,
        drop_last=True,
        num_workers=0,
    )
    torch.manual_seed(123)
    model = bc.load_hf_safetensors(GPTModel(spec.config), spec.weights).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=spec.weight_decay)

    def step(batch: tuple[Tensor, Tensor], mark: Callable[[], None]) -> Tensor:
        # The body of the book's train_model_simple.
        optimizer.zero_grad()
        loss = calc_loss_batch(*batch, model, "cpu")
        loss.backward()
        mark()
        optimizer.step()
        return loss.detach()

    torch.manual_seed(123)  # the book reseeds before its epoch loop (the shuffle order)
    batches = endless(loader)
    run = Run("book", peak_rss_mib=vm_hwm_mib())
    result = measured(
        run,
        lambda: time_steps(run, batches, lambda b: b, step, spec.steps),
    )
    if spec.profile:
        result["profile"] = profile_step(batches, step)
    return result


def example_lengths(batch: dict[str, Tensor]) -> list[int]:
    """Each row's entry length in a padded batch: through its last counted target (its first
    end-of-text)."""
    counted = batch["targets"] != IGNORE_INDEX
    last = torch.arange(counted.shape[1]).expand_as(counted).masked_fill(~counted, -1)
    return [max(int(n) + 1, 1) for n in last.max(dim=1).values]


def lit_datamodule(spec: Spec) -> InstructionDataModule:
    """lit_sft's DataModule on the same file, split, batch size and masking as the book."""
    datamodule = InstructionDataModule(
        path=spec.data,
        batch_size=spec.batch_size,
        mask_instructions=spec.mask_instructions,
        allowed_max_length=spec.config["context_length"],
        shuffle=spec.shuffle,
    )
    datamodule.setup("fit")
    return datamodule


def lit_side(spec: Spec, lora: LoRAConfig | None = None) -> dict[str, Any]:
    """lit_sft's batches and `InstructionModule.training_step` without the Trainer, timed, in a
    process set up as `train.py` sets up its own (`keep_freed_memory`); with `lora`, LoRA
    adapters on the loaded weights (as `adapter=lora` trains)."""
    import_reference(spec.ref_dir)
    keep_freed_memory()
    if spec.threads:
        torch.set_num_threads(spec.threads)
    batches = endless(lit_datamodule(spec).train_dataloader())
    module = InstructionModule(
        spec.config, lr=spec.lr, weight_decay=spec.weight_decay, compile=spec.compile
    )
    load_weights(module.model, spec.weights)
    if lora is not None:
        add_adapters(module.model, lora)
    module.configure_model()
    module.train()
    # The module's own optimizer (AdamW, and whatever options the project gives it); the
    # scheduler it comes with is constant by default, so it can be left out.
    optimizer = module.configure_optimizers()["optimizer"]

    def step(batch: dict[str, Tensor], mark: Callable[[], None]) -> Tensor:
        # What SFTModule.training_step does at accumulate_grad_batches=1, with its arguments.
        if spec.packing:
            # As `data.packing=true`'s collate packs it, here inside the timed step.
            batch = pack_batch(batch, example_lengths(batch), spec.config["context_length"])
        tokens = (batch["targets"] != IGNORE_INDEX).sum().float().clamp(min=1)
        loss_sum = sft_step(
            module.model,
            optimizer,
            batch,
            scale=1 / tokens,
            micro_batch_size=module.hparams.micro_batch_size,
            before_step=mark,
        )
        return loss_sum / tokens

    name = "compiled" if spec.compile else "packed" if spec.packing else "lit_sft"
    run = Run(name if lora is None else f"lora r{lora.rank}", peak_rss_mib=vm_hwm_mib())
    result = measured(
        run,
        lambda: time_steps(
            run,
            batches,
            lambda b: (b["input_ids"], b["targets"]),
            step,
            spec.steps,
        ),
    )
    if spec.profile:
        result["profile"] = profile_step(batches, step)
    result["trainable_parameters"] = trainable_parameters(module.model)
    return result


class StepClock(L.Callback):
    """Times the Trainer from one batch's end to the next, and keeps each step's loss."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.last = 0.0

    def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.last = time.perf_counter()

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        module: L.LightningModule,
        outputs: Any,
        batch: dict[str, Tensor],
        batch_idx: int,
    ) -> None:
        now = time.perf_counter()
        self.run.step_s.append(now - self.last)
        self.last = now
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self.run.losses.append(float(loss))
        self.run.record_batch(batch["input_ids"], batch["targets"])


def lightning_side(spec: Spec) -> dict[str, Any]:
    """The same steps through `Trainer.fit` (no validation, logger or checkpoints), timed."""
    import_reference(spec.ref_dir)
    keep_freed_memory()
    if spec.threads:
        torch.set_num_threads(spec.threads)
    module = InstructionModule(spec.config, lr=spec.lr, weight_decay=spec.weight_decay)
    load_weights(module.model, spec.weights)
    run = Run("lightning", peak_rss_mib=vm_hwm_mib())
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        precision="32-true",
        max_steps=spec.steps,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[StepClock(run)],
    )
    return measured(run, lambda: trainer.fit(module, datamodule=lit_datamodule(spec)))


def timed_steps(run: dict[str, Any], warmup: int) -> slice:
    """The steps the statistics cover: all but the warm-up (at least one)."""
    return slice(min(warmup, len(run["step_s"]) - 1), None)


def median_step_s(run: dict[str, Any], warmup: int) -> float:
    """Median step time after the warm-up."""
    return statistics.median(run["step_s"][timed_steps(run, warmup)])


def summarize(rounds: list[dict[str, Any]], warmup: int) -> dict[str, Any]:
    """Step time, throughput and memory of the fastest round, over the steps after the warm-up."""
    # Other processes can only slow a round down, so the fastest is the least disturbed.
    run = min(rounds, key=lambda r: median_step_s(r, warmup))
    timed = timed_steps(run, warmup)
    seconds = sum(run["step_s"][timed])
    return {
        "median_step_s": median_step_s(run, warmup),
        "round_median_step_s": [median_step_s(r, warmup) for r in rounds],
        "median_data_s": statistics.median(run["data_s"][timed]) if run["data_s"] else None,
        "median_optimizer_s": (
            statistics.median(run["optimizer_s"][timed]) if run["optimizer_s"] else None
        ),
        "tokens_per_s_padded": sum(run["padded_tokens"][timed]) / seconds,
        "tokens_per_s_targets": sum(run["target_tokens"][timed]) / seconds,
        "peak_rss_mib": run["peak_rss_mib"],
        "train_peak_rss_mib": run["train_peak_rss_mib"],
        "other_cpu_frac": run["other_cpu_frac"],
        "losses": run["losses"],
        "step_s": run["step_s"],
    }


def compare(book: list[dict[str, Any]], other: list[dict[str, Any]]) -> dict[str, Any]:
    """Whether two sides saw the same batches in every round, and how far apart their losses are."""
    pairs = list(zip(book, other, strict=True))
    same_inputs = all(b["input_digests"] == o["input_digests"] for b, o in pairs)
    same_targets = all(b["target_digests"] == o["target_digests"] for b, o in pairs)
    diffs = [abs(x - y) for b, o in pairs for x, y in zip(b["losses"], o["losses"], strict=True)]
    return {
        "same_inputs": same_inputs,
        "same_targets": same_targets,
        "max_abs_loss_diff": max(diffs),
        "checked": same_inputs and same_targets,
    }


def verdict(check: dict[str, Any]) -> str:
    """Why a loss comparison was or was not held to the tolerance."""
    if check["checked"]:
        return "same batches"
    if check["same_inputs"]:
        # lit_sft masks the response header too; the book's exercise 7.2 only the instruction.
        return "same inputs, targets masked differently: not checked"
    return "different batches (shuffled): not checked"


def print_table(label: str, summaries: dict[str, dict[str, Any]]) -> None:
    """One row per side: step time, throughput, memory, contention, speed-up over the book."""
    book_s = summaries["book"]["median_step_s"]
    print(label)
    print(
        f"{'':<10}{'step s':>8}{'tok/s all':>11}{'tok/s tgt':>11}{'peak MiB':>10}"
        f"{'train MiB':>11}{'other cpu':>10}{'speed-up':>10}"
    )
    for side, s in summaries.items():
        train_mib = s["train_peak_rss_mib"] or float("nan")
        print(
            f"{side:<10}{s['median_step_s']:>8.3f}{s['tokens_per_s_padded']:>11.1f}"
            f"{s['tokens_per_s_targets']:>11.1f}{s['peak_rss_mib']:>10.0f}{train_mib:>11.0f}"
            f"{s['other_cpu_frac']:>10.2f}{book_s / s['median_step_s']:>9.2f}x"
        )
    for side, s in summaries.items():
        print(f"{side:<10} losses " + " ".join(f"{x:.5f}" for x in s["losses"]))


def run_sides(
    spec: Spec, lightning: bool, rounds: int, compiled: bool = False, packed: bool = False
) -> dict[str, list[dict[str, Any]]]:
    """Each side in its own process, in turn, `rounds` times (never two at once on 2 cores)."""
    sides = {"book": (book_side, spec), "lit_sft": (lit_side, spec)}
    if compiled:
        sides["compiled"] = (lit_side, replace(spec, compile=True))
    if packed:
        sides["packed"] = (lit_side, replace(spec, packing=True))
    if lightning:
        sides["lightning"] = (lightning_side, spec)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in sides}
    for _ in range(rounds):
        for name, (side, side_spec) in sides.items():
            runs[name].append(in_child(side, side_spec))
    return runs


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Runs the comparison, prints a table and a JSON line; exits 1 if the losses disagree."""
    args = parse_args(argv)
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(SHARED / "tiktoken-cache"))
    model_name = "tiny" if args.tiny else args.model
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        spec = spec_from_initial_weights(
            tmp,
            args.ref_dir,
            model_name,
            data=args.data,
            batch_size=args.batch_size,
            steps=args.steps,
            shuffle=args.shuffle,
            mask_instructions=args.mask_instructions,
            threads=args.threads,
            profile=args.profile,
        )
        runs = run_sides(spec, args.lightning, args.rounds, args.compile, args.packing)
    summaries = {side: summarize(run, args.warmup) for side, run in runs.items()}
    checks = {side: compare(runs["book"], run) for side, run in runs.items() if side != "book"}
    label = (
        f"{model_name}, batch {args.batch_size}, {args.steps} steps ({args.warmup} warm-up), "
        f"best of {args.rounds} round(s), "
        f"{args.threads or torch.get_num_threads()} threads, "
        f"load average {load_start[0]:.2f} -> {os.getloadavg()[0]:.2f}"
    )
    print_table(label, summaries)
    for side, rounds in runs.items():
        if rounds[0].get("profile"):
            print(f"\n{side}: one profiled step\n{rounds[0]['profile']}", file=sys.stderr)
    failed = []
    for side, check in checks.items():
        print(
            f"book vs {side}: max |loss diff| {check['max_abs_loss_diff']:.2e} ({verdict(check)})"
        )
        if check["checked"] and check["max_abs_loss_diff"] > LOSS_TOLERANCE:
            failed.append(side)
    result = {
        "bench": "bench_train",
        "model": model_name,
        "steps": args.steps,
        "warmup": args.warmup,
        "batch_size": args.batch_size,
        "shuffle": args.shuffle,
        "mask_instructions": args.mask_instructions,
        "rounds": args.rounds,
        "batch_shapes": runs["book"][0]["shapes"],
        "torch_threads": torch.get_num_threads() if args.threads is None else args.threads,
        "loadavg_start_end": [load_start[0], os.getloadavg()[0]],
        "speedup_lit_sft_vs_book": summaries["book"]["median_step_s"]
        / summaries["lit_sft"]["median_step_s"],
        "loss_checks": checks,
        "sides": summaries,
    }
    print(json.dumps(result))
    if failed:
        sys.exit(
            f"FAIL: losses of {', '.join(failed)} differ from the book's by > {LOSS_TOLERANCE}"
        )
    return result


if __name__ == "__main__":
    main()
