"""Results keyed by what produced them: judges, prompts, generation, weights; old folders."""

from __future__ import annotations

import json
import statistics
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file, save_file

from lit_sft.checkpoints import load_model
from lit_sft.cli.evaluate import evaluate
from lit_sft.cli.sources import model_config
from lit_sft.curves import read_scalar
from lit_sft.evaluation import answers as answering
from lit_sft.evaluation.answers import token_budget
from lit_sft.evaluation.judge import Judge, JudgeResult
from lit_sft.evaluation.keys import weights_hash
from lit_sft.generation import generate
from lit_sft.model import GPT, GPTConfig
from lit_sft.prompts import prompt_style
from lit_sft.run_dir import RunDir
from lit_sft.tokenizer import Tokenizer
from tests.evaluation.support import (
    QUICK,
    answers_made,
    copy_run,
    eval_config,
    read_json,
    results_of,
    run_evaluate,
    score_of,
    synthetic_test_split,
    user_env,
)
from tests.helpers.llm_server import FakeLLMServer, Reply, rubric_reply


def chats_by_model(server: FakeLLMServer) -> Counter[str]:
    return Counter(c.body["model"] for c in server.chats)


def test_two_judges_on_the_same_answers_are_both_asked_and_both_kept(
    tiny_run: Path, tmp_path: Path, two_judges: FakeLLMServer
) -> None:
    run = copy_run(tiny_run, tmp_path / "run")
    common = [f"run_dir={run}", f"judge.url={two_judges.url}", "limit=6", *QUICK]
    llama = evaluate(eval_config(*common, "judge.model=llama3"))
    qwen = evaluate(eval_config(*common, "judge.model=qwen2"))
    assert chats_by_model(two_judges) == {"llama3": 6, "qwen2": 6}
    results = results_of(run)
    assert len(results) == 2 and results[0][0].path == results[1][0].path  # same answers
    for summary in (llama, qwen):
        (scores_dir,) = [s for a, s in results if summary["result"].endswith(s.path.name)]
        assert read_json(scores_dir.summary) == summary
        lines = [json.loads(line) for line in scores_dir.scores.read_text().splitlines()]
        assert summary["mean"] == pytest.approx(sum(x["score"] for x in lines) / 6)
    assert llama["mean"] != qwen["mean"]
    assert (llama["scorer"]["model"], qwen["scorer"]["model"]) == ("llama3", "qwen2")
    assert llama["scorer"]["url"] == qwen["scorer"]["url"] == two_judges.url
    # The run's loggers hold both, each under its own name.
    step = read_json(run / "summary.json")["steps"]
    for summary in (llama, qwen):
        logged = read_scalar(run, f"eval/{summary['result']}/mean")
        assert logged == [(step, pytest.approx(summary["mean"]))]
    # The same judge again: its scores are there, nothing is asked.
    again = evaluate(eval_config(*common, "judge.model=llama3"))
    assert again["mean"] == llama["mean"] and len(two_judges.chats) == 12


def test_another_prompt_or_server_is_another_result(
    tiny_run: Path, tmp_path: Path, two_judges: FakeLLMServer
) -> None:
    run = copy_run(tiny_run, tmp_path / "run")
    common = [f"run_dir={run}", "limit=4", *QUICK]
    evaluate(eval_config(*common, f"judge.url={two_judges.url}"))
    two_judges.reply_by_model["llama3"] = lambda body: Reply(text=rubric_reply(4))
    rubric = evaluate(eval_config(*common, f"judge.url={two_judges.url}", "judge.prompt=rubric"))
    assert len(two_judges.chats) == 8 and rubric["mean"] == 75.0
    assert "Grade:" in two_judges.chats[-1].body["messages"][0]["content"]
    other = FakeLLMServer(models=["llama3"], default_reply=Reply(text="10"))
    other.start()
    try:
        moved = evaluate(eval_config(*common, f"judge.url={other.url}"))
    finally:
        other.stop()
    assert len(other.chats) == 4 and moved["mean"] == 10.0
    # The same server and model through its OpenAI-compatible API: another judge's scores.
    served = [f"judge.url={two_judges.url}", "judge.model=llama3:latest"]
    evaluate(eval_config(*common, *served))
    evaluate(eval_config(*common, *served, "judge=openai"))
    assert [c.path for c in two_judges.chats[-8:]] == ["/api/chat"] * 4 + [
        "/v1/chat/completions"
    ] * 4
    names = sorted(s.path.name for _, s in results_of(run))
    assert len(names) == 5 and sum("rubric" in n for n in names) == 1
    assert sum(n.startswith("judge-openai-llama3_latest-book-") for n in names) == 1


def test_changing_a_generation_setting_or_the_weights_generates_anew(
    tiny_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = copy_run(tiny_run, tmp_path / "run")
    calls: list[dict[str, Any]] = []
    real_generate = answering.generate

    def counting(model, prompts, **kwargs):
        calls.append(kwargs)
        return real_generate(model, prompts, **kwargs)

    monkeypatch.setattr(answering, "generate", counting)
    base = [f"run_dir={run}", "scorer=exact_match", "limit=4", *QUICK]
    perturbed = tmp_path / "perturbed.safetensors"
    weights = load_file(tiny_run / "model.safetensors")
    name = next(iter(sorted(weights)))
    weights[name] = weights[name] + 0.5
    save_file(weights, perturbed)
    variants = [
        [],
        ["max_new_tokens=3"],
        ["temperature=0.7"],
        ["temperature=0.7", "seed=5"],
        ["temperature=0.7", "seed=5", "top_k=3"],
        [f"weights={perturbed}"],
    ]
    for number, extra in enumerate(variants, start=1):
        evaluate(eval_config(*base, *extra))
        assert len(calls) == number, extra  # one batch of 4: generated anew
        assert len(results_of(run)) == number
    evaluate(eval_config(*base))  # the first settings again: nothing generated
    evaluate(eval_config(*base, f"weights={tiny_run / 'checkpoints' / 'last.ckpt'}"))
    assert len(calls) == len(variants)  # the checkpoint holds the same weights: same answers
    hashes = {read_json(a.settings).get("weights_sha256") for a, _ in results_of(run)}
    assert len(hashes) == 2


def test_evaluate_generates_with_temperature_top_k_and_seed_as_generate_does(
    tiny_run: Path, tmp_path: Path
) -> None:
    options = {"temperature": 0.9, "top_k": 4, "seed": 7}
    run = copy_run(tiny_run, tmp_path / "run")
    overrides = [f"{k}={v}" for k, v in options.items()]
    evaluate(eval_config(f"run_dir={run}", "scorer=exact_match", "limit=8", *QUICK, *overrides))
    made = answers_made(run)
    # Independently: generate() on the same prompts in the same batches of 4, one generator.
    source = OmegaConf.load(run / ".hydra" / "config.yaml")
    model = load_model(model_config(source), tiny_run / "model.safetensors")
    tokenizer, style = Tokenizer(), prompt_style("alpaca")
    prompts = [tokenizer.encode(style.prompt(e)) for e in synthetic_test_split()[:8]]

    def answers_with(temperature: float, top_k: int | None, seed: int) -> list[list[int]]:
        generator = torch.Generator().manual_seed(seed)
        return [
            tokens
            for start in (0, 4)
            for tokens in generate(
                model,
                prompts[start : start + 4],
                max_new_tokens=4,
                temperature=temperature,
                top_k=top_k,
                generator=generator,
            )
        ]

    expected = answers_with(**options)
    assert [a["model_response"] for a in made] == [
        style.extract_response(tokenizer.decode(t)) for t in expected
    ]
    assert [a["new_tokens"] for a in made] == [len(t) for t in expected]
    # Each option changes what is generated, so dropping any of them would fail the test above.
    for name, default in (("temperature", 0.0), ("top_k", None), ("seed", 123)):
        assert answers_with(**{**options, name: default}) != expected, name


def test_answers_record_their_token_count_and_whether_they_ended(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    entries = [{"instruction": f"task {i}", "input": "", "output": "x"} for i in range(3)]
    made = [[11, 12], [11, 12, 13, 14], []]  # 4 = max_new_tokens: ran out, did not end
    monkeypatch.setattr(answering, "generate", lambda model, prompts, **kw: made[: len(prompts)])
    model = GPT(GPTConfig(vocab_size=64, context_length=64, emb_dim=4, n_layers=1, n_heads=1))
    answered, _ = answering.generate_responses(
        model,
        entries,
        prompt_style("alpaca"),
        tmp_path / "a.json",
        max_new_tokens=4,
        batch_size=3,
        progress=False,
    )
    assert [(a["new_tokens"], a["ended"]) for a in answered] == [(2, True), (4, False), (0, True)]
    # A prompt that fills the context leaves fewer tokens than max_new_tokens: running out of
    # room is not ending.
    assert token_budget([[1] * 60, [1] * 3], 10, model) == 4
    assert token_budget([[1] * 3], 10, model) == 10
    assert token_budget([[1] * 100], 10, model) == 1  # cut to context - 1, as generate does


def test_an_evaluation_stopped_at_the_sixth_score_resumes_without_asking_again(
    tiny_run: Path, tmp_path: Path, two_judges: FakeLLMServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = copy_run(tiny_run, tmp_path / "run")
    real_score, calls = Judge.score, []

    def crash_at_sixth(self, *texts, **kw) -> JudgeResult:
        calls.append(texts)
        if len(calls) == 6:
            raise KeyboardInterrupt
        return real_score(self, *texts, **kw)

    monkeypatch.setattr(Judge, "score", crash_at_sixth)
    cfg = eval_config(f"run_dir={run}", f"judge.url={two_judges.url}", "limit=10", *QUICK)
    with pytest.raises(KeyboardInterrupt):
        evaluate(cfg)
    assert len(two_judges.chats) == 5
    summary = evaluate(cfg)
    asked = [c.body["messages"][0]["content"] for c in two_judges.chats]
    assert len(asked) == 10 and len(set(asked)) == 10  # each answer asked about exactly once
    assert (summary["scored"], summary["failures"]) == (10, 0)


def test_repeats_keep_each_scoring_and_report_the_spread(
    tiny_run: Path, tmp_path: Path, two_judges: FakeLLMServer
) -> None:
    run = copy_run(tiny_run, tmp_path / "run")
    # The judge drifts with its seed, as real ones do between runs.
    two_judges.reply_by_model["llama3"] = lambda body: Reply(
        text=str(score_of(body, salt=body["options"]["seed"]))
    )
    common = [f"run_dir={run}", f"judge.url={two_judges.url}", "limit=5", *QUICK]
    once = evaluate(eval_config(*common))
    thrice = evaluate(eval_config(*common, "judge.repeats=3"))
    assert len(two_judges.chats) == 15  # repeat 0 reused; repeats 1 and 2 asked
    assert sorted({c.body["options"]["seed"] for c in two_judges.chats}) == [123, 124, 125]
    assert once["result"] == thrice["result"]  # the same judge, scored more often
    lines = [json.loads(x) for x in (run / "eval" / thrice["result"] / "scores.jsonl").open()]
    by_repeat = [[x["score"] for x in lines if x["repeat"] == r] for r in range(3)]
    sc = thrice["self_consistency"]
    assert sc["repeats"] == 3 and sc["entries"] == 5
    assert sc["means"] == pytest.approx([sum(r) / 5 for r in by_repeat])
    stds = [statistics.stdev(column) for column in zip(*by_repeat, strict=True)]
    assert sc["mean_entry_std"] == pytest.approx(sum(stds) / 5)
    assert thrice["mean"] == pytest.approx(sum(map(sum, by_repeat)) / 15)
    assert once["self_consistency"] is None


def test_an_old_run_folder_is_read_but_never_reused(tiny_run: Path, tmp_path: Path) -> None:
    run = copy_run(tiny_run, tmp_path / "run")
    old = run / "eval"
    old.mkdir()
    split = synthetic_test_split()[:4]
    (old / "instruction-data-with-response.json").write_text(
        json.dumps([{**e, "model_response": e["output"]} for e in split])  # all "right"
    )
    (old / "scores.jsonl").write_text(
        "".join(
            json.dumps({"index": i, "score": 1.0, "samples": [1], "error": None}) + "\n"
            for i in range(4)
        )
    )
    (old / "eval-summary.json").write_text(json.dumps({"metric": "judge", "mean": 1.0}))
    assert RunDir(run).read_eval_summary() == {"metric": "judge", "mean": 1.0}  # the report's
    summary = evaluate(eval_config(f"run_dir={run}", "scorer=exact_match", "limit=4", *QUICK))
    assert summary["timing"]["generated"]["answers"] == 4  # answered anew
    assert summary["mean"] < 100.0  # a 4-step model: not the old file's perfect answers
    assert RunDir(run).read_eval_summary() == summary
    assert json.loads((old / "eval-summary.json").read_text())["mean"] == 1.0  # kept as it was


def test_a_summary_describes_itself_and_evaluate_says_where_it_is(
    tiny_run: Path, tmp_path: Path, two_judges: FakeLLMServer
) -> None:
    run = copy_run(tiny_run, tmp_path / "run")
    args = [f"run_dir={run}", f"judge.url={two_judges.url}", "limit=3", *QUICK]
    done = run_evaluate([*args, "temperature=0.5", "top_k=9", "seed=4"], user_env())
    assert done.returncode == 0, done.stderr
    ((answers, scores),) = results_of(run)
    assert f"summary   {scores.summary}" in done.stdout.splitlines()
    summary = read_json(scores.summary)
    model = load_model(
        model_config(OmegaConf.load(run / ".hydra" / "config.yaml")), run / "model.safetensors"
    )
    assert summary["answers"]["weights_sha256"] == weights_hash(model)
    assert summary["answers"]["prompt_style"] == "alpaca"
    assert summary["generation"] | {"weights": None} == {
        "max_new_tokens": 4,
        "temperature": 0.5,
        "top_k": 9,
        "seed": 4,
        "batch_size": 4,
        "weights": None,
    }
    assert {k: summary["scorer"][k] for k in ("api", "url", "model", "prompt", "repeats")} == {
        "api": "ollama",
        "url": two_judges.url,
        "model": "llama3",
        "prompt": "book",
        "repeats": 1,
    }
    assert summary["entries"] == 3 and summary["limit"] == 3
    timing = summary["timing"]
    assert timing["seconds"] >= timing["scoring_seconds"] >= 0 and timing["started_at"]
    assert read_json(answers.settings) == summary["answers"]
    assert read_json(scores.settings) == {
        k: v for k, v in summary["scorer"].items() if k != "repeats"
    }
