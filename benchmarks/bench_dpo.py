"""A DPO step as the book's notebook describes it against lit_sft's, same weights and same pairs.

    python benchmarks/bench_dpo.py --steps 4 [--model gpt2-small] [--threads 2]

The book's DPO notebook is not in ../shared/bench/ref, so its step is RE-IMPLEMENTED here from the
published recipe, not copied: the book's GPTModel (imported from --ref-dir), prompt + "\\n\\n###
Response:\\n" + answer, the mask dropping the prompt but keeping "### Response:\\n", padding with
end-of-text and masking it, log-probabilities averaged over the counted tokens (compute_logprobs),
four forward passes per step (policy and frozen reference, chosen and rejected), AdamW lr 5e-6,
weight decay 0.01. lit_sft: `DPOModule` (logp=mean) on `PreferenceDataModule` batches (one
forward of chosen and rejected together; the output head only on counted positions), with the
frozen reference run live and precomputed. One process, the sides in turn, the first train pairs
in file order; random weights (seed 123) written once and loaded by both. Prints a table and one
JSON line. Losses differ by design (lit_sft masks the response header and counts one
end-of-text); the check line compares both log-probability codes on the book's own batch.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from lit_sft.checkpoints import load_weights
from lit_sft.data.entries import load_entries, split_entries
from lit_sft.data.preference import PREFERENCE_FIELDS, PreferenceDataModule
from lit_sft.prompts import prompt_style
from lit_sft.tokenizer import END_OF_TEXT, IGNORE_INDEX, Tokenizer
from lit_sft.training.dpo import DPOModule
from lit_sft.training.losses import sequence_logps

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LIT_SFT_SHARED", REPO.parent / "shared"))
BETA = 0.1


def book_batches(entries: list[dict], batch_size: int, steps: int) -> list[dict[str, Tensor]]:
    """The book's preference batches: chosen and rejected token ids and their masks, padded."""
    tokenizer, alpaca = Tokenizer(), prompt_style("alpaca")
    batches = []
    for start in range(0, batch_size * steps, batch_size):
        rows = {"chosen": [], "rejected": []}
        for entry in entries[start : start + batch_size]:
            prompt = tokenizer.encode(alpaca.instruction_text(entry))
            for key in rows:
                full = tokenizer.encode(
                    f"{alpaca.instruction_text(entry)}\n\n### Response:\n{entry[key]}"
                )
                rows[key].append((full, len(prompt)))
        width = max(len(full) for key in rows for full, _ in rows[key])
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
    logits = model(ids)[:, :-1]
    logps = torch.gather(F.log_softmax(logits, dim=-1), -1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    mask = mask[:, 1:]
    return (logps * mask).sum(-1) / mask.sum(-1)


def book_step(policy, reference, optimizer, batch: dict[str, Tensor]) -> float:
    optimizer.zero_grad()
    pc = book_logprobs(policy, batch["chosen"], batch["chosen_mask"])
    pr = book_logprobs(policy, batch["rejected"], batch["rejected_mask"])
    with torch.no_grad():
        rc = book_logprobs(reference, batch["chosen"], batch["chosen_mask"])
        rr = book_logprobs(reference, batch["rejected"], batch["rejected_mask"])
    loss = -F.logsigmoid(BETA * ((pc - pr) - (rc - rr))).mean()
    loss.backward()
    optimizer.step()
    return loss.item()


def run_book(policy: torch.nn.Module, batches: list[dict]) -> tuple[list[float], list[float]]:
    reference = copy.deepcopy(policy).requires_grad_(False)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=5e-6, weight_decay=0.01)
    return timed(lambda b: book_step(policy, reference, optimizer, b), batches)


def lit_module(
    config: dict, weights: Path, precompute: bool = False
) -> tuple[DPOModule, torch.optim.Optimizer]:
    module = DPOModule(config, beta=BETA, logp="mean", precompute_reference=precompute)
    load_weights(module.model, weights)
    module.configure_model()
    return module, module.configure_optimizers()["optimizer"]


def lit_step(module: DPOModule, optimizer, batch: dict[str, Tensor]) -> float:
    optimizer.zero_grad()
    # The reference comes from the precomputed table when the module has one, else live.
    sums = module.backward_sums(batch, 1 / (batch["input_ids"].shape[0] // 2))
    optimizer.step()
    return (sums[0] / (batch["input_ids"].shape[0] // 2)).item()


def timed(step, batches) -> tuple[list[float], list[float]]:
    times, losses = [], []
    for batch in batches:
        start = time.perf_counter()
        losses.append(step(batch))
        times.append(time.perf_counter() - start)
    return times, losses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", default="gpt2-small", choices=["gpt2-small", "gpt2-medium", "tiny"]
    )
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=1, help="steps left out of the medians")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument(
        "--data", default=str(SHARED / "data" / "instruction-data-with-preference.json")
    )
    parser.add_argument("--ref-dir", default=str(SHARED / "bench" / "ref"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    sys.path.insert(0, args.ref_dir)
    import bench_common  # the book's model and the reference's weight converter

    ns = argparse.Namespace(model=args.model, tiny=args.model == "tiny", load_init=None)
    book_policy, cfg = bench_common.build_model(ns, seed=123)
    config = {k: cfg[k] for k in ("vocab_size", "context_length", "emb_dim", "n_layers", "n_heads")}
    config |= {"drop_rate": 0.0, "qkv_bias": True}
    weights = Path(tempfile.mkdtemp()) / "model.safetensors"
    bench_common.save_hf_safetensors(book_policy, str(weights), cfg)

    train, _, _ = split_entries(load_entries(args.data, fields=PREFERENCE_FIELDS))
    book = book_batches(train, args.batch_size, args.steps)
    data = PreferenceDataModule(path=args.data, batch_size=args.batch_size, shuffle=False)
    data.setup()
    ours = [b for b, _ in zip(data.train_dataloader(), range(args.steps), strict=False)]

    # Check: both log-probability codes on the book's first batch (same weights, same mask).
    module, optimizer = lit_module(config, weights)
    ids, mask = book[0]["chosen"], book[0]["chosen_mask"]
    with torch.no_grad():
        theirs = book_logprobs(book_policy, ids, mask)
        targets = ids[:, 1:].masked_fill(~mask[:, 1:], IGNORE_INDEX)
        mine = sequence_logps(module.model, ids[:, :-1], targets, mean=True)
    logp_diff = (theirs - mine).abs().max().item()

    results = {"book recipe (re-implemented)": run_book(book_policy, book)}
    del book_policy
    results["lit_sft, live reference"] = timed(lambda b: lit_step(module, optimizer, b), ours)
    del module, optimizer
    module, optimizer = lit_module(config, weights, precompute=True)
    start = time.perf_counter()
    module.compute_reference_table({"train": ours})
    precompute_s = time.perf_counter() - start
    results["lit_sft, precomputed reference"] = timed(
        lambda b: lit_step(module, optimizer, b), ours
    )

    medians = {side: statistics.median(t[args.warmup :]) for side, (t, _) in results.items()}
    base = medians["book recipe (re-implemented)"]
    threads = torch.get_num_threads()
    print(f"{args.model}, batch {args.batch_size}, {args.steps} steps, threads {threads}")
    print(f"{'side':34s} {'median step s':>13s} {'vs book':>8s}  losses")
    for side, (_, losses) in results.items():
        rounded = [round(x, 4) for x in losses]
        print(f"{side:34s} {medians[side]:13.3f} {base / medians[side]:7.2f}x  {rounded}")
    print(f"reference precompute for {args.steps} batches: {precompute_s:.2f} s (once per run)")
    print(f"check: book vs lit_sft mean log-probabilities, same batch: max |diff| {logp_diff:.2e}")
    speedups = {side: base / median for side, median in medians.items()}
    print(
        json.dumps(
            {
                "model": args.model,
                "median_step_s": medians,
                "speedup_vs_book": speedups,
                "precompute_s": precompute_s,
                "logp_max_abs_diff": logp_diff,
            }
        )
    )


if __name__ == "__main__":
    main()
