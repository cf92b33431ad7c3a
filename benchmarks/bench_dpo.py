"""A DPO step as the book's notebook describes it against lit_sft's, same weights and same pairs.

    python -m benchmarks.bench_dpo --model gpt2-small --steps 3 --warmup 1 [--threads 2]

The book's DPO notebook is not in ../shared/bench/ref, so its step is RE-IMPLEMENTED here from the
published recipe on the book's GPTModel: "\n\n### Response:\n" kept in the mask, end-of-text
padding masked, mean log-probabilities, four forward passes a step, AdamW 5e-6 / 0.01. lit_sft:
`DPOModule` (logp=mean) on `PreferenceDataModule` batches, reference live and precomputed. The
losses differ by design (lit_sft masks the header); the check compares both log-probability codes
on the book's own batch.
"""

from __future__ import annotations

import copy
import statistics
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from benchmarks import common
from lit_sft.checkpoints import load_weights
from lit_sft.data.entries import load_entries, split_entries
from lit_sft.data.preference import PREFERENCE_FIELDS, PreferenceDataModule
from lit_sft.prompts import prompt_style
from lit_sft.tokenizer import END_OF_TEXT, IGNORE_INDEX, Tokenizer
from lit_sft.training.dpo import DPOModule
from lit_sft.training.losses import sequence_logps

BETA = 0.1


def book_batches(entries: list[dict], batch_size: int, steps: int) -> list[dict[str, Tensor]]:
    """The book's preference batches: chosen and rejected token ids and their masks, padded."""
    tokenizer, alpaca = Tokenizer(), prompt_style("alpaca")
    batches = []
    for start in range(0, batch_size * steps, batch_size):
        rows: dict[str, list[tuple[list[int], int]]] = {"chosen": [], "rejected": []}
        for entry in entries[start : start + batch_size]:
            prompt = alpaca.instruction_text(entry)
            for key, items in rows.items():
                full = tokenizer.encode(f"{prompt}\n\n### Response:\n{entry[key]}")
                items.append((full, len(tokenizer.encode(prompt))))
        width = max(len(full) for items in rows.values() for full, _ in items)
        batch = {}
        for key, items in rows.items():
            ids = torch.full((len(items), width), END_OF_TEXT)
            mask = torch.zeros(len(items), width, dtype=torch.bool)
            for row, (full, prompt_length) in enumerate(items):
                ids[row, : len(full)] = torch.tensor(full)
                mask[row, prompt_length + 2 : len(full)] = True  # "\n\n" masked, the header kept
            batch[key], batch[f"{key}_mask"] = ids, mask
        batches.append(batch)
    return batches


def book_logprobs(model: torch.nn.Module, ids: Tensor, mask: Tensor) -> Tensor:
    """compute_logprobs as the book describes it: per-token log-probabilities, masked mean."""
    logps = F.log_softmax(model(ids)[:, :-1], dim=-1).gather(-1, ids[:, 1:].unsqueeze(-1))
    mask = mask[:, 1:]
    return (logps.squeeze(-1) * mask).sum(-1) / mask.sum(-1)


def book_step(policy: torch.nn.Module) -> Callable[[dict[str, Tensor]], float]:
    """The book's DPO step on its own batches, with a frozen copy of `policy` as reference."""
    reference = copy.deepcopy(policy).requires_grad_(False)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=5e-6, weight_decay=0.01)

    def step(batch: dict[str, Tensor]) -> float:
        optimizer.zero_grad()
        pc, pr = (
            book_logprobs(policy, batch[k], batch[f"{k}_mask"]) for k in ("chosen", "rejected")
        )
        with torch.no_grad():
            rc, rr = (
                book_logprobs(reference, batch[k], batch[f"{k}_mask"])
                for k in ("chosen", "rejected")
            )
        loss = -F.logsigmoid(BETA * ((pc - pr) - (rc - rr))).mean()
        loss.backward()
        optimizer.step()
        return loss.item()

    return step


def lit_step(config: dict, weights: str, batches: list, precompute: bool) -> Callable:
    """lit_sft's DPO step (`DPOModule`, mean log-probabilities), reference live or precomputed."""
    module = DPOModule(config, beta=BETA, logp="mean", precompute_reference=precompute)
    load_weights(module.model, weights)
    module.configure_model()
    optimizer = module.configure_optimizers()["optimizer"]
    if precompute:
        module.compute_reference_table({"train": batches})

    def step(batch: dict[str, Tensor]) -> float:
        pairs = batch["input_ids"].shape[0] // 2
        optimizer.zero_grad()
        # The reference comes from the precomputed table when the module has one, else live.
        sums = module.backward_sums(batch, 1 / pairs)
        optimizer.step()
        return (sums[0] / pairs).item()

    return step


def timed_side(make: Callable[[], Callable], batches: list, warmup: int) -> dict[str, Any]:
    """Builds a side (its set-up counted in its time only when it is per run, as a precompute is)
    and runs its steps; median step time after `warmup`, positions/s and peak memory."""
    common.reset_peak()
    step, setup_s = common.timed(make)
    times, losses = [], []
    for batch in batches:
        loss, seconds = common.timed(lambda batch=batch: step(batch))
        times.append(seconds)
        losses.append(loss)
    ids = [b["input_ids"] if "input_ids" in b else b["chosen"] for b in batches]
    positions = sum(x.numel() for x in ids[warmup:]) * (1 if "input_ids" in batches[0] else 2)
    return common.side(
        statistics.median(times[warmup:]),
        positions / sum(times[warmup:]),
        common.peak_mib(),
        setup_s=setup_s,
        losses=losses,
    )


def parse_args(argv: Sequence[str] | None) -> Any:
    p = common.parser(__doc__)
    p.set_defaults(data=str(common.PREFERENCE_DATA))
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--warmup", type=int, default=1, help="steps left out of the medians")
    p.add_argument("--batch-size", type=int, default=8)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Runs the sides, prints the table and the JSON line."""
    args = parse_args(argv)
    book = common.setup(args)
    config = common.model_config(args.model)
    train = split_entries(load_entries(args.data, fields=PREFERENCE_FIELDS))[0]
    data = PreferenceDataModule(path=args.data, batch_size=args.batch_size, shuffle=False)
    data.setup()
    ours = [b for b, _ in zip(data.train_dataloader(), range(args.steps), strict=False)]
    theirs = book_batches(train, args.batch_size, args.steps)
    sides, checks = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        weights = common.seeded_weights(Path(tmp) / "init.safetensors", config, book)
        if book is not None:
            policy = book.model(config, weights)
            module = DPOModule(config, logp="mean")
            load_weights(module.model, weights)
            ids, mask = theirs[0]["chosen"], theirs[0]["chosen_mask"]
            with torch.no_grad():
                targets = ids[:, 1:].masked_fill(~mask[:, 1:], IGNORE_INDEX)
                mine = sequence_logps(module.model, ids[:, :-1], targets, mean=True)
                checks["logp_max_abs_diff"] = (
                    (book_logprobs(policy, ids, mask) - mine).abs().max().item()
                )
            del module
            sides["book"] = timed_side(lambda: book_step(policy), theirs, args.warmup)
            del policy
        for name, precompute in (("lit_sft", False), ("lit_sft precomputed", True)):
            make = lambda p=precompute: lit_step(config, weights, ours, p)  # noqa: E731
            sides[name] = timed_side(make, ours, args.warmup)
    common.print_sides(
        f"{args.model}, batch {args.batch_size} pairs, {args.steps} steps ({args.warmup} "
        "warm-up); book: its notebook's recipe re-implemented; seconds a step",
        sides,
    )
    for name, s in sides.items():
        print(
            f"{name:<20} set-up {s['setup_s']:.2f} s, losses {[round(x, 4) for x in s['losses']]}"
        )
    if checks:
        print(f"check: book vs lit_sft mean log-probabilities, same batch: max |diff| "
              f"{checks['logp_max_abs_diff']:.2e}")  # fmt: skip
    return common.emit("bench_dpo", args, book, sides, steps=args.steps, **checks)


if __name__ == "__main__":
    main()
