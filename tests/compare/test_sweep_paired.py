"""The sweep report's paired interval of each run against the best run."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from lit_sft.evaluation.paired import keyed_scores, paired_stats
from lit_sft.evaluation.results import claim
from lit_sft.report import main
from lit_sft.run_dir import EvalDir
from tests.compare.test_compare_cli import ENTRIES, judge_line


def scored_run(sweep: Path, name: str, scores: list[float], entries=ENTRIES) -> Path:
    """A finished run folder with one exact-match result, as train and evaluate leave it."""
    run = sweep / name
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text("seed: 1\n")
    (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"module.lr={name}"]))
    (run / "summary.json").write_text(json.dumps({"status": "finished", "val_loss": 1.0}))
    answers = EvalDir(run / "eval").answers("greedy-max8-0123456789")
    claim(answers.settings, {"source": "model", "generation": {"max_new_tokens": 8}})
    answers.answers.write_text(json.dumps([{**e, "model_response": "?"} for e in entries]))
    scored = answers.scores("exact_match")
    claim(scored.settings, {"scorer": "exact_match"})
    scored.scores.write_text("".join(judge_line(i, s) for i, s in enumerate(scores)))
    summary = {
        "result": f"{answers.path.name}/exact_match",
        "metric": "exact_match",
        "mean": sum(scores) / len(scores),
        "ci95": None,
    }
    scored.summary.write_text(json.dumps(summary))
    return run


def test_each_run_against_the_best(tmp_path: Path, capsys) -> None:
    best = [100.0] * 6 + [0.0, 0.0]
    worse = [100.0, 0, 100, 0, 100, 0, 0, 100]
    scored_run(tmp_path, "0.1", worse)
    scored_run(tmp_path, "0.2", best)
    other = [{**ENTRIES[0], "output": "another reference"}, *ENTRIES[1:]]
    scored_run(tmp_path, "0.3", [0.0] * 8, entries=other)  # another test split
    scored_run(tmp_path, "0.4", [0.0] * 5, entries=ENTRIES[:5])  # evaluated with limit=5
    assert main([str(tmp_path)]) == 0
    report = (tmp_path / "report.md").read_text()
    stats = paired_stats(keyed_scores(ENTRIES, best), keyed_scores(ENTRIES, worse))
    low, high = stats.ci95
    assert stats.diff == -25.0
    assert (
        f"| 0.1 | 8 | -25.00 | [{low:+.2f}, {high:+.2f}] | 1 / 4 / 3 | {stats.p_value:.3g} |"
        in report
    )
    assert "Against the best run (0.2)" in report
    assert "| 0.2 | 8 |" not in report  # not against itself
    assert "| 0.3 | — | — | 0.2 and 0.3 answered different test splits" in report
    assert "| 0.4 | 5 | -100.00 | [-100.00, -100.00] | 0 / 0 / 5 |" in report
