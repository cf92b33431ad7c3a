"""`python -m lit_sft.compare`: judges' agreement on hand-built scores, a run, answers files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from scipy import stats

from lit_sft.cli.evaluate import evaluate
from lit_sft.compare.__main__ import main
from lit_sft.errors import InvalidInput, MissingFile
from lit_sft.evaluation.results import claim
from lit_sft.run_dir import EvalDir
from tests.evaluation.support import (
    QUICK,
    copy_run,
    eval_config,
    read_json,
    run_evaluate,
    user_env,
)
from tests.helpers.config import SHARED
from tests.helpers.llm_server import FakeLLMServer
from tests.helpers.scripts import run_script

EXAMPLE = SHARED / "data" / "eval-example-data.json"


def judge_line(index: int, score: float | None, repeat: int = 0) -> str:
    samples = [] if score is None else [int(score)]
    error = "HTTP 500" if score is None else None
    record = {"index": index, "repeat": repeat, "score": score, "samples": samples, "error": error}
    return json.dumps(record) + "\n"


def hand_built(folder: Path, judges: dict[str, list[float | None]]) -> None:
    """An eval folder with one set of answers and a judge folder per entry of `judges`."""
    answers = EvalDir(folder / "eval").answers("greedy-max256-0123456789")
    n = len(next(iter(judges.values())))
    claim(answers.settings, {"source": "model", "note": "hand-built"})
    entries = [
        {"instruction": f"task {i}", "output": "x", "model_response": f"r{i}"} for i in range(n)
    ]
    answers.answers.write_text(json.dumps(entries))
    for name, scores in judges.items():
        scored = answers.scores(name)
        claim(scored.settings, {"scorer": "judge", "model": name})
        scored.scores.write_text("".join(judge_line(i, s) for i, s in enumerate(scores)))


def test_agreement_of_every_pair_equals_scipy_on_hand_built_scores(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = [90.0, 20.0, 75.0, 60.0, 10.0, 85.0, 40.0, 55.0]
    b = [80.0, 45.0, 50.0, 70.0, 0.0, 95.0, 30.0, None]  # b failed on the last entry
    c = [50.0, 50.0, 60.0, 40.0, 70.0, 30.0, 50.0, 45.0]
    hand_built(tmp_path / "run", {"judge-a": a, "judge-b": b, "judge-c": c})
    assert main([str(tmp_path / "run"), "--out", str(tmp_path / "cmp")]) == 0
    report = read_json(tmp_path / "cmp" / "compare.json")
    pairs = {(p["a"], p["b"]): p for p in report["judges"]["pairs"]}
    assert set(pairs) == {("judge-a", "judge-b"), ("judge-a", "judge-c"), ("judge-b", "judge-c")}
    for (x_name, y_name), pair in pairs.items():
        x, y = (
            {"judge-a": a, "judge-b": b, "judge-c": c}[x_name],
            {"judge-b": b, "judge-c": c}[y_name],
        )
        both = [i for i in range(8) if x[i] is not None and y[i] is not None]
        xs, ys = [x[i] for i in both], [y[i] for i in both]
        assert pair["n"] == len(both)
        assert pair["pearson"] == pytest.approx(stats.pearsonr(xs, ys).statistic)
        assert pair["spearman"] == pytest.approx(stats.spearmanr(xs, ys).statistic)
        assert pair["kendall_tau"] == pytest.approx(stats.kendalltau(xs, ys).statistic)
        assert pair["mean_abs_diff"] == pytest.approx(
            sum(abs(p - q) for p, q in zip(xs, ys, strict=True)) / len(both)
        )
        apart = [i for i in both if abs(x[i] - y[i]) > 20]
        assert [e["index"] for e in pair["far_apart"]] == apart
    assert pairs["judge-a", "judge-b"]["n"] == 7
    # Entry 1: a 20, b 45, 25 apart; its instruction is shown beside the scores.
    assert pairs["judge-a", "judge-b"]["far_apart"][0] | {"model_response": ""} == {
        "index": 1,
        "a": 20.0,
        "b": 45.0,
        "instruction": "task 1",
        "model_response": "",
    }
    markdown = (tmp_path / "cmp" / "compare.md").read_text()
    assert "| judge-a | judge-b | 7 |" in markdown and "Kendall τ" in markdown
    printed = capsys.readouterr().out
    assert markdown.strip() in printed and f"wrote {tmp_path / 'cmp' / 'compare.json'}" in printed


def test_repeated_scores_are_compared_by_their_mean(tmp_path: Path) -> None:
    hand_built(tmp_path, {"judge-a": [10.0, 50.0, 90.0], "judge-b": [0.0, 0.0, 0.0]})
    scores = EvalDir(tmp_path / "eval").answers_dirs()[0].scores("judge-b").scores
    with scores.open("a") as f:  # a second repeat of judge-b
        f.writelines(judge_line(i, s, repeat=1) for i, s in enumerate([20.0, 60.0, 100.0]))
    assert main([str(tmp_path), "--out", str(tmp_path / "cmp")]) == 0
    (pair,) = read_json(tmp_path / "cmp" / "compare.json")["judges"]["pairs"]
    # judge-b per entry: (0 + 20) / 2, (0 + 60) / 2, (0 + 100) / 2 = 10, 30, 50.
    assert (pair["n"], pair["pearson"]) == (3, pytest.approx(1.0))
    assert pair["mean_abs_diff"] == pytest.approx((0 + 20 + 40) / 3)


def test_a_folder_without_results_is_one_error_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([str(tmp_path), "--out", str(tmp_path / "cmp")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "no evaluation results" in err and err.count("\n") == 1
    assert not (tmp_path / "cmp").exists()
    with pytest.raises(MissingFile):
        evaluate(eval_config(f"answers={tmp_path / 'none.json'}", f"out={tmp_path}"))


def test_answers_made_elsewhere_are_scored_keyed_and_compared(
    tmp_path: Path, two_judges: FakeLLMServer
) -> None:
    out = tmp_path / "book"
    for field in ("model 1 response", "model 2 response"):
        for model in ("llama3", "qwen2"):
            summary = evaluate(
                eval_config(
                    f"answers={EXAMPLE}",
                    f"response_field={field}",
                    f"out={out}",
                    f"judge.url={two_judges.url}",
                    f"judge.model={model}",
                    "limit=10",
                )
            )
            assert summary["answers"]["source"] == "file"
            assert summary["answers"]["response_field"] == field
            assert summary["generation"] is None and summary["entries"] == 10
    assert len(two_judges.chats) == 40
    example = json.loads(EXAMPLE.read_text())
    asked = two_judges.chats[0].body["messages"][0]["content"]
    assert example[0]["model 1 response"] in asked and example[0]["output"] in asked
    answer_sets = EvalDir(out / "eval").answers_dirs()
    assert len(answer_sets) == 2 and all(len(a.scores_dirs()) == 2 for a in answer_sets)
    assert main([str(out), "--out", str(tmp_path / "cmp")]) == 0
    pairs = read_json(tmp_path / "cmp" / "compare.json")["judges"]["pairs"]
    assert len(pairs) == 2 and {p["n"] for p in pairs} == {10}
    with pytest.raises(InvalidInput, match="lacks model 3 response"):
        evaluate(eval_config(f"answers={EXAMPLE}", "response_field=model 3 response"))


def test_the_two_judge_example_from_the_command_line(
    tiny_run: Path, tmp_path: Path, two_judges: FakeLLMServer
) -> None:
    """evaluate.py with judge.model=llama3, then qwen2, then `python -m lit_sft.compare`."""
    run = copy_run(tiny_run, tmp_path / "run")
    for model in ("llama3", "qwen2"):
        args = [f"run_dir={run}", f"judge.url={two_judges.url}", f"judge.model={model}", "limit=6"]
        done = run_evaluate([*args, *QUICK], user_env())
        assert done.returncode == 0, done.stderr
        assert f"judge ollama {model} at {two_judges.url}" in done.stdout
    command = ["-m", "lit_sft.compare", str(run), "--out", str(tmp_path / "cmp")]
    done = run_script(*command, env=user_env(), timeout=120)
    assert done.returncode == 0, done.stderr
    (pair,) = read_json(tmp_path / "cmp" / "compare.json")["judges"]["pairs"]
    assert pair["n"] == 6 and "Judges' agreement" in done.stdout
