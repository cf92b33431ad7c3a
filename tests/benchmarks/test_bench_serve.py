"""bench_serve on a tiny model: it runs, and its figures are consistent with its own counts."""

from __future__ import annotations

import json

import pytest

from benchmarks import bench_serve


def test_bench_serve_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    arch = json.dumps({"emb_dim": 32, "n_layers": 2, "n_heads": 2, "context_length": 128})
    argv = ["--model", "gpt2-tiny", "--arch", arch, "--clients", "1,3", "--max-tokens", "4"]
    result = bench_serve.main([*argv, "--requests", "2"])
    printed = capsys.readouterr().out.splitlines()
    assert json.loads(printed[-1]) == result
    rows = result["rows"]
    assert [(r["server"], r["clients"]) for r in rows] == [
        ("batching", 1), ("batching", 3), ("no batching", 1), ("no batching", 3)
    ]  # fmt: skip
    for row in rows:
        assert row["requests"] == 2 * row["clients"]
        assert row["requests_per_s"] == pytest.approx(row["requests"] / row["wall_s"])
        assert 0 < row["ttft_median_s"] <= row["ttft_max_s"] <= row["wall_s"]
        assert 0 < row["tokens_per_s"] <= 4 * row["requests"] / row["wall_s"] + 1e-9
