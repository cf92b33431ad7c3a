"""What every benchmark shares: options, the book's code, seeded weights, timing, memory, output.

Every script measures lit_sft against the book's chapter-7 code ("Build a Large Language Model From
Scratch", `--book-dir`, imported at run time, never copied) in the same invocation, and ends with
one JSON line (`emit`):

    {"bench": ..., "book_dir": <path or null>, "sides": {side: {"seconds", "tokens_per_s",
     "peak_mib", ...}}, "vs_book": {side: {"speedup", "throughput", "memory"}}, ...}

A side's `seconds` is its latency (a step, an answer, a run: the script says which), `tokens_per_s`
its throughput and `peak_mib` its peak memory; `vs_book` holds each side's figures over the book's
(null when `--book-dir` is absent: the book's sides are then skipped with a note).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
# The book's data, code and tokenizer files; $LIT_SFT_SHARED where they lie elsewhere (as in tests).
SHARED = Path(os.environ.get("LIT_SFT_SHARED", REPO.parent / "shared"))
BOOK_DATA = SHARED / "data" / "instruction-data.json"
PREFERENCE_DATA = SHARED / "data" / "instruction-data-with-preference.json"
DEFAULT_BOOK_DIR = SHARED / "bench" / "ref"
MODELS = sorted(p.stem for p in (REPO / "conf" / "model").glob("gpt2-*.yaml"))
NEVER = -1  # an end-of-text id no token has: every answer runs its full length
BOOK_ALLOWED_MAX_LENGTH = 1024  # what the book's chapter 7 passes to its collate

T = TypeVar("T")


def parser(description: str, model: str = "gpt2-small") -> argparse.ArgumentParser:
    """An argument parser with the options every benchmark takes."""
    p = argparse.ArgumentParser(description=description.splitlines()[0])
    p.add_argument("--model", default=model, type=model_name, help=f"one of {', '.join(MODELS)}")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--data", default=str(BOOK_DATA), help="instruction set")
    p.add_argument(
        "--book-dir",
        "--ref-dir",
        default=str(DEFAULT_BOOK_DIR),
        help="the book's code (../shared/bench/ref or $LIT_SFT_SHARED/bench/ref); absent: skipped",
    )
    return p


def model_name(name: str) -> str:
    """A size in conf/model; `tiny` is gpt2-tiny (scripts once took the reference's tiny model)."""
    name = "gpt2-tiny" if name == "tiny" else name
    if name not in MODELS:
        raise argparse.ArgumentTypeError(f"{name!r} is no size in conf/model ({', '.join(MODELS)})")
    return name


def setup(args: argparse.Namespace) -> Book | None:
    """Offline tokenizer, thread count; the book's code if it is at `--book-dir` (else a note)."""
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(SHARED / "tiktoken-cache"))
    if args.threads:
        torch.set_num_threads(args.threads)
    return find_book(args.book_dir)


def model_config(name: str) -> dict[str, Any]:
    """The architecture `conf/model/<name>.yaml` describes, as GPTConfig's (and the book's) keys."""
    base, size = (
        yaml.safe_load((REPO / "conf" / "model" / f"{file}.yaml").read_text())
        for file in ("base/gpt2", name)
    )
    # The base's `arch.tie_weights` interpolates `model.tie_weights`, which a size may override.
    return {**base["arch"], **size["arch"], "tie_weights": size.get("tie_weights", False)}


@dataclass(frozen=True)
class Book:
    """The book's code at `dir` (plain values: it crosses into spawned processes)."""

    dir: str

    def module(self, name: str) -> ModuleType:
        """One of the book's modules (`previous_chapters`, `instruction_finetuning`,
        `bench_common`, `peak_flops` from the folder above)."""
        # The book's files are scripts, not a package: they import each other by bare name.
        for folder in (self.dir, str(Path(self.dir).parent)):
            if folder not in sys.path:
                sys.path.insert(0, folder)
        return __import__(name)

    def model(self, config: dict[str, Any], weights: str | None = None) -> torch.nn.Module:
        """The book's GPTModel: seeded 123, or holding `weights` (Hugging Face naming)."""
        torch.manual_seed(123)
        model = self.module("previous_chapters").GPTModel(book_config(config))
        if weights is not None:
            self.module("bench_common").load_hf_safetensors(model, weights)
        return model


def find_book(book_dir: str | None) -> Book | None:
    """The book's code at `book_dir`, or None with a note on stderr when it is not there."""
    if book_dir and (Path(book_dir) / "previous_chapters.py").is_file():
        return Book(str(Path(book_dir).resolve()))
    print(f"note: no book code at {book_dir}; the book's side is skipped", file=sys.stderr)
    return None


def book_config(config: dict[str, Any]) -> dict[str, Any]:
    """The keys of `config` the book's GPTModel reads."""
    keys = ("vocab_size", "context_length", "emb_dim", "n_layers", "n_heads", "drop_rate")
    return {**{k: config[k] for k in keys}, "qkv_bias": config["qkv_bias"]}


def seeded_weights(path: str | Path, config: dict[str, Any], book: Book | None) -> str:
    """Writes random weights (seed 123) in Hugging Face naming; returns the path. The book's
    GPTModel draws them when the book is there (earlier figures reproduce), else lit_sft's GPT."""
    if book is not None:
        model = book.model(config)
        book.module("bench_common").save_hf_safetensors(model, str(path), book_config(config))
        return str(path)
    from lit_sft.checkpoints import export_hf
    from lit_sft.model import GPT, GPTConfig

    torch.manual_seed(123)
    folder = Path(path).parent / "lit_sft_init"
    export_hf(GPT(GPTConfig(**config)), folder)
    (folder / "model.safetensors").rename(path)
    return str(path)


def in_child(function: Callable[..., T], *args: Any) -> T:
    """`function(*args)` in a fresh spawned process, so its peak memory is its own."""
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        return pool.submit(function, *args).result()


def peak_mib() -> float:
    """Peak resident memory of this process since it started or since `reset_peak` (VmHWM)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM"):
                return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak() -> bool:
    """Resets VmHWM to the current resident size (Linux >= 4.0); whether it could."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


class OtherCpu:
    """The share of the machine's CPU time other processes used between `start` and `stop`: a
    timing taken while it is above ~0.05 is disturbed."""

    def start(self) -> OtherCpu:
        self.wall, self.busy, self.own = time.perf_counter(), _busy_s(), time.process_time()
        return self

    def stop(self) -> float:
        wall = time.perf_counter() - self.wall
        other = (_busy_s() - self.busy) - (time.process_time() - self.own)
        return max(other, 0.0) / (wall * (os.cpu_count() or 1))


def _busy_s() -> float:
    """CPU seconds the whole machine spent busy (user, nice, system, irq, softirq) since boot."""
    with open("/proc/stat") as stat:
        ticks = [int(x) for x in stat.readline().split()[1:]]
    return (ticks[0] + ticks[1] + ticks[2] + ticks[5] + ticks[6]) / os.sysconf("SC_CLK_TCK")


def timed(run: Callable[[], T]) -> tuple[T, float]:
    """`run()`'s result and its wall time in seconds."""
    start = time.perf_counter()
    result = run()
    return result, time.perf_counter() - start


def median_seconds(run: Callable[[], Any], repeats: int = 7, warmup: int = 2) -> float:
    """Median wall time of `run` over `repeats` calls after `warmup` untimed ones."""
    for _ in range(warmup):
        run()
    times = sorted(timed(run)[1] for _ in range(repeats))
    return times[len(times) // 2]


# peak_flops.py's own shapes (../shared/bench): its peak is the best median over them.
PEAK_SHAPES = [(1024, 1024, 1024), (2048, 2048, 2048), (4096, 4096, 4096), (1024, 768, 2304),
               (1024, 768, 3072), (1024, 768, 50257), (1024, 1024, 4096)]  # fmt: skip


def gemm_peak(book: Book | None, shapes: list[tuple[int, int, int]] | None = None) -> float:
    """The fp32 GEMM FLOP/s MFU divides by: `../shared/bench/peak_flops.py`'s peak (the best
    median over its square and GPT-2-shaped products, or `shapes`), timed here without it."""
    shapes = shapes or PEAK_SHAPES
    if book is not None:
        bench = book.module("peak_flops").bench
        return max(bench(m, k, n, repeats=5)["gflops_median"] for m, k, n in shapes) * 1e9
    rates = []
    for m, k, n in shapes:
        x, w = torch.randn(m, k), torch.randn(k, n)
        rates.append(2 * m * k * n / median_seconds(lambda x=x, w=w: x @ w, 5, warmup=1))
    return max(rates)


def side(seconds: float, tokens_per_s: float, peak_mib: float, **extra: Any) -> dict[str, Any]:
    """One side's figures: latency, throughput, peak memory, and whatever else it reports."""
    return {"seconds": seconds, "tokens_per_s": tokens_per_s, "peak_mib": peak_mib, **extra}


def vs_book(sides: dict[str, dict[str, Any]], book: str = "book") -> dict[str, dict[str, float]]:
    """Each side against the `book` side: speed-up (the book's seconds / the side's), throughput
    (the side's tokens/s / the book's), memory (the side's peak / the book's); empty without it."""
    base = sides.get(book)
    if base is None:
        return {}
    return {
        name: {
            "speedup": base["seconds"] / s["seconds"],
            "throughput": s["tokens_per_s"] / base["tokens_per_s"],
            "memory": s["peak_mib"] / base["peak_mib"],
        }
        for name, s in sides.items()
    }


def print_sides(title: str, sides: dict[str, dict[str, Any]], unit: str = "s") -> None:
    """The table every script prints: each side's figures and its ratios to the book's."""
    ratios = vs_book(sides, next((n for n in sides if n.startswith("book")), "book"))
    width = max(map(len, sides), default=0) + 2
    print(title)
    print(
        f"{'':<{width}}{unit:>10}{'tokens/s':>11}{'peak MiB':>10}"
        f"{'speed-up':>10}{'tok/s x':>9}{'memory x':>10}"
    )
    for name, s in sides.items():
        r = ratios.get(name)
        vs = f"{r['speedup']:>9.2f}x{r['throughput']:>8.2f}x{r['memory']:>9.2f}x" if r else ""
        print(
            f"{name:<{width}}{s['seconds']:>10.3f}{s['tokens_per_s']:>11.1f}"
            f"{s['peak_mib']:>10.0f}{vs}"
        )
    if not ratios:
        print("(no book side: --book-dir not found, so no ratios)")


def emit(
    bench: str, args: argparse.Namespace, book: Book | None, sides: dict[str, Any], **extra: Any
) -> dict[str, Any]:
    """Prints the one JSON line a script ends with, and returns it."""
    base = next((n for n in sides if n.startswith("book")), "book")
    result = {
        "bench": bench,
        "model": getattr(args, "model", None),
        "book_dir": book.dir if book else None,
        "threads": torch.get_num_threads(),
        "loadavg": list(os.getloadavg()),
        "sides": sides,
        "vs_book": vs_book(sides, base),
        **extra,
    }
    print(json.dumps(result, default=str))
    return result
