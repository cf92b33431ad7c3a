"""The server under load: requests/s and time to first token at 1, 4 and 16 concurrent clients.

    python -m benchmarks.bench_serve --model gpt2-small --clients 1,4,16 --max-tokens 32

Random weights (seed 123), greedy, on the CPU. The server (`lit_sft.serving`, uvicorn in a thread
of this process) runs twice: batching (`max_batch_size` = the most clients) and without
(`max_batch_size=1`: one request at a time, as a server without batching serves them). Each of
`c` clients streams `--requests` chat completions one after another over HTTP (different book-style
instructions); time to first token is from sending a request to its first content chunk. Prints a
table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import torch
import uvicorn
import yaml

from lit_sft.model import GPT, GPTConfig
from lit_sft.prompts import prompt_style
from lit_sft.serving.app import ServedModel, ServerSettings, create_app
from lit_sft.serving.engine import Engine
from lit_sft.tokenizer import Tokenizer

REPO = Path(__file__).resolve().parents[1]
NAME = "bench"
INSTRUCTIONS = [
    "Rewrite the sentence using a simile: The car is very fast.",
    "What is the capital of Italy?",
    "Convert 45 kilometers to meters.",
    "Give three examples of renewable energy sources.",
    "Name the author of 'Pride and Prejudice'.",
    "Classify the following as a fruit or a vegetable: carrot.",
    "Translate 'good morning' into Spanish.",
    "Edit the sentence for grammar: He go to school every day.",
]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gpt2-small", help="a size in conf/model")
    parser.add_argument("--clients", default="1,4,16", help="concurrent clients, comma-separated")
    parser.add_argument("--requests", type=int, default=1, help="requests per client")
    parser.add_argument("--max-tokens", type=int, default=32, help="of each answer")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--arch", default=None, help="JSON overrides of the architecture")
    return parser.parse_args(argv)


def build_model(name: str, overrides: dict[str, int] | None = None) -> GPT:
    """The model size `conf/model/<name>.yaml` describes, randomly initialised from seed 123."""
    base, size = (
        yaml.safe_load((REPO / "conf" / "model" / f"{file}.yaml").read_text())
        for file in ("base/gpt2", name)
    )
    tie_weights = size.get("tie_weights", base["tie_weights"])
    arch = {**base["arch"], **size["arch"], **(overrides or {}), "tie_weights": tie_weights}
    torch.manual_seed(123)
    return GPT(GPTConfig(**arch)).eval()


@contextmanager
def serving(model: GPT, max_batch_size: int, max_tokens: int) -> Iterator[str]:
    """The model served on a free port of 127.0.0.1; yields its URL."""
    engine = Engine(model, Tokenizer(), max_batch_size=max_batch_size, max_queue=1024)
    settings = ServerSettings(NAME, max_tokens=max_tokens)
    app = create_app(ServedModel(engine, prompt_style("alpaca")), settings)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join()
        sock.close()


def stream_one(client: httpx.Client, url: str, instruction: str, max_tokens: int) -> dict:
    """One streamed chat completion: seconds to the first content chunk and in all, tokens."""
    body = {
        "model": NAME,
        "messages": [{"role": "user", "content": instruction}],
        "max_tokens": max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    start = time.perf_counter()
    first, tokens = None, 0
    with client.stream("POST", url + "/v1/chat/completions", json=body, timeout=600) as resp:
        resp.raise_for_status()
        for line in resp.iter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[6:])
            if first is None and chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                first = time.perf_counter() - start
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
    return {"ttft_s": first, "seconds": time.perf_counter() - start, "tokens": tokens}


def load(url: str, clients: int, requests: int, max_tokens: int) -> dict[str, float]:
    """`clients` clients each streaming `requests` requests; throughput and TTFT."""

    def client_run(index: int) -> list[dict]:
        with httpx.Client() as client:
            return [
                stream_one(client, url, INSTRUCTIONS[(index + r) % len(INSTRUCTIONS)], max_tokens)
                for r in range(requests)
            ]

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = [r for rs in pool.map(client_run, range(clients)) for r in rs]
    wall = time.perf_counter() - start
    ttfts = [r["ttft_s"] for r in results if r["ttft_s"] is not None]
    return {
        "clients": clients,
        "requests": len(results),
        "wall_s": wall,
        "requests_per_s": len(results) / wall,
        "tokens_per_s": sum(r["tokens"] for r in results) / wall,
        "ttft_median_s": statistics.median(ttfts) if ttfts else float("nan"),
        "ttft_max_s": max(ttfts) if ttfts else float("nan"),
    }


def main(argv: Sequence[str] | None = None) -> dict[str, object]:
    """Measures both servers at each client count; prints a table and a JSON line."""
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model = build_model(args.model, json.loads(args.arch) if args.arch else None)
    counts = [int(c) for c in args.clients.split(",")]
    rows = []
    for label, batch in (("batching", max(counts)), ("no batching", 1)):
        with serving(model, batch, args.max_tokens) as url:
            load(url, 1, 1, 2)  # warm-up: first-call costs out of the figures
            for clients in counts:
                rows.append({"server": label, **load(url, clients, args.requests, args.max_tokens)})
    print(
        f"{'server':<12} {'clients':>7} {'req/s':>7} {'tok/s':>7} {'TTFT med':>9} {'TTFT max':>9}"
    )
    for r in rows:
        print(
            f"{r['server']:<12} {r['clients']:>7} {r['requests_per_s']:>7.2f} "
            f"{r['tokens_per_s']:>7.1f} {r['ttft_median_s']:>8.2f}s {r['ttft_max_s']:>8.2f}s"
        )
    result = {
        "benchmark": "serve",
        "model": args.model,
        "max_tokens": args.max_tokens,
        "requests_per_client": args.requests,
        "torch_threads": torch.get_num_threads(),
        "rows": rows,
    }
    print(json.dumps(result))
    sys.stdout.flush()
    return result


if __name__ == "__main__":
    main()
