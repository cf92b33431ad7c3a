"""`python -m lit_sft.compare <a> <b> ...`: models compared on evaluation folders."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from lit_sft.cli.evaluate import evaluate
from lit_sft.compare.__main__ import main
from lit_sft.evaluation.paired import keyed_scores, paired_stats
from lit_sft.evaluation.results import claim
from lit_sft.run_dir import EvalDir
from tests.evaluation.support import eval_config, read_json
from tests.helpers.config import SHARED
from tests.helpers.llm_server import Reply

EXAMPLE = SHARED / "data" / "eval-example-data.json"
ENTRIES = [
    {"instruction": f"Reverse the letters: a b {c}", "input": "", "output": f"{c} b a"}
    for c in "cdefghij"
]


def judge_line(index: int, score: float | None) -> str:
    return json.dumps({"index": index, "score": score, "samples": [], "error": None}) + "\n"


def evaluated(
    folder: Path,
    answers: list[str],
    scores: dict[str, list[float | None]],
    order: list[int] | None = None,
    judge_url: str = "http://127.0.0.1:9",
) -> Path:
    """An evaluation folder as evaluate leaves it: answers (in `order`), a folder per scorer."""
    order = order or list(range(len(answers)))
    eval_answers = EvalDir(folder / "eval").answers("greedy-max8-0123456789")
    claim(eval_answers.settings, {"source": "model", "generation": {"max_new_tokens": 8}})
    records = [{**ENTRIES[i], "model_response": answers[i]} for i in order]
    eval_answers.answers.write_text(json.dumps(records))
    for name, values in scores.items():
        scored = eval_answers.scores(name)
        settings = {"scorer": name}
        if name.startswith("judge"):
            settings = {"scorer": "judge", "api": "ollama", "url": judge_url, "model": "llama3"}
        claim(scored.settings, settings)
        scored.scores.write_text("".join(judge_line(n, values[i]) for n, i in enumerate(order)))
    return folder


BASE = (
    ["", "c b a", "e", "f b a f b a f b a", "g b a", "", "i b a", "x"],
    [0, 100, 0, 0, 100, 0, 100, 0],
)
SFT = (["c b a", "d b a", "e b a", "f b a", "g b a", "h b a", "i b a", "j b a"], [100] * 8)


@pytest.fixture
def folders(tmp_path: Path) -> list[Path]:
    order = list(range(8))
    random.Random(0).shuffle(order)
    return [
        evaluated(tmp_path / "base", BASE[0], {"exact_match": BASE[1], "judge-x": [10] * 8}),
        evaluated(tmp_path / "sft", SFT[0], {"exact_match": SFT[1]}, order=order),
    ]


def test_two_folders_compared_on_their_shared_metrics(folders, tmp_path, capsys) -> None:
    out = tmp_path / "cmp"
    assert main([*map(str, folders), "--out", str(out), "--worst", "2"]) == 0
    report = read_json(out / "compare.json")["models"]
    (pair,) = report["pairs"]  # the judge scored only the base model
    expected = paired_stats(keyed_scores(ENTRIES, BASE[1]), keyed_scores(ENTRIES, SFT[1])).as_dict()
    assert {k: pair[k] for k in expected} == expected
    assert (pair["a"], pair["b"], pair["metric"]) == ("base", "sft", "exact_match")
    assert (pair["wins"], pair["ties"], pair["losses"]) == (5, 3, 0)
    assert len(pair["worst"]) == 2 and pair["worst"][0]["diff"] == 100
    flags = report["models"]["base"]["flags"]["flags"]
    assert flags["empty"]["count"] == 2 and flags["repetition"]["count"] == 1
    assert report["models"]["base"]["flags"]["by_task"]["reverse"]["answers"] == 8
    assert (out / "compare.png").read_bytes()[:4] == b"\x89PNG"
    markdown = (out / "compare.md").read_text()
    assert "| base | sft | exact_match | 8 | 37.50 | 100.00 | +62.50 |" in markdown
    assert f"wrote {out / 'compare.png'}" in capsys.readouterr().out


def test_other_test_splits_are_one_error_line(folders, tmp_path, capsys) -> None:
    other = evaluated(tmp_path / "other", SFT[0], {"exact_match": SFT[1]})
    answers = EvalDir(other / "eval").answers_dirs()[0].answers
    records = json.loads(answers.read_text())
    records[0]["output"] = "another reference"  # so each split has an entry the other lacks
    answers.write_text(json.dumps(records))
    assert main([str(folders[0]), str(other), "--out", str(tmp_path / "cmp")]) == 1
    error = capsys.readouterr().err
    assert error.startswith("error: base and other answered different test splits")
    assert error.count("\n") == 1


def test_pairwise_asks_the_judge_that_scored_and_cancels_position_bias(
    tmp_path, judge_server
) -> None:
    folders = [
        evaluated(tmp_path / "base", BASE[0], {"judge-x": [10] * 8}, judge_url=judge_server.url),
        evaluated(tmp_path / "sft", SFT[0], {"judge-x": [90] * 8}, judge_url=judge_server.url),
    ]
    judge_server.default_reply = Reply("1")  # always the first answer shown
    out = tmp_path / "cmp"
    assert main([*map(str, folders), "--out", str(out), "--pairwise", "--report", "models"]) == 0
    (pairwise,) = read_json(out / "compare.json")["models"]["pairwise"]
    assert (pairwise["wins"], pairwise["ties"], pairwise["losses"]) == (0, 8, 0)
    assert pairwise["win_rate"] == 0.5
    assert len(judge_server.chats) == 16
    assert "## Pairwise judge" in (out / "compare.md").read_text()
    assert main([*map(str, folders), "--out", str(out), "--pairwise", "--report", "models"]) == 0
    assert len(judge_server.chats) == 16  # every verdict kept: nothing asked again


def test_an_evaluation_stopped_early_is_paired_on_what_it_answered(folders, tmp_path) -> None:
    answers = EvalDir(folders[0] / "eval").answers_dirs()[0].answers
    records = json.loads(answers.read_text())
    records[2] = records[5] = None  # not answered yet
    answers.write_text(json.dumps(records))
    assert main([*map(str, folders), "--out", str(tmp_path / "cmp")]) == 0
    (pair,) = read_json(tmp_path / "cmp" / "compare.json")["models"]["pairs"]
    kept = [i for i in range(8) if i not in (2, 5)]
    expected = paired_stats(
        keyed_scores([ENTRIES[i] for i in kept], [BASE[1][i] for i in kept]),
        keyed_scores(ENTRIES, SFT[1]),
    )
    assert (pair["n"], pair["unpaired"], pair["diff"]) == (6, 2, expected.diff)


def test_either_model_may_have_stopped_early(folders, tmp_path) -> None:
    """B answered fewer entries than A: the pair is their overlap, per-entry differences too."""
    answers = EvalDir(folders[1] / "eval").answers_dirs()[0].answers
    records = json.loads(answers.read_text())
    records[6] = records[7] = None  # not answered yet (a smaller limit=)
    answers.write_text(json.dumps(records))
    assert main([*map(str, folders), "--out", str(tmp_path / "cmp")]) == 0
    (pair,) = read_json(tmp_path / "cmp" / "compare.json")["models"]["pairs"]
    assert (pair["n"], pair["unpaired"]) == (6, 2)
    assert len(pair["entry_differences"]) == 6


def test_pairwise_without_a_judge_says_how_to_get_one(folders, tmp_path, capsys) -> None:
    exact_only = [
        evaluated(tmp_path / "a", BASE[0], {"exact_match": BASE[1]}),
        evaluated(tmp_path / "b", SFT[0], {"exact_match": SFT[1]}),
    ]
    assert main([*map(str, exact_only), "--out", str(tmp_path / "cmp"), "--pairwise"]) == 1
    assert "--pairwise needs a judge" in capsys.readouterr().err


def test_the_books_two_models_answers_compared(tmp_path: Path) -> None:
    if not EXAMPLE.is_file():
        pytest.skip(f"{EXAMPLE} is not there")
    folders, summaries = [], []
    for number in (1, 2):
        folder = tmp_path / f"model{number}"
        summary = evaluate(
            eval_config(
                f"answers={EXAMPLE}",
                f"response_field=model {number} response",
                f"out={folder}",
                "scorer=exact_match",
            )
        )
        folders.append(folder)
        summaries.append(summary)
    # Every evaluation summary carries the error flags: the book's model 2 echoes more inputs.
    copies = [s["flags"]["flags"]["copies_prompt"]["count"] for s in summaries]
    assert copies == [2, 5] and summaries[0]["flags"]["answers"] == 100
    assert main([*map(str, folders), "--out", str(tmp_path / "cmp")]) == 0
    report = read_json(tmp_path / "cmp" / "compare.json")["models"]
    assert report["pairs"][0]["n"] == 100
    assert {m["flags"]["answers"] for m in report["models"].values()} == {100}
