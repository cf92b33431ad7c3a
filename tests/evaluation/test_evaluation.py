"""Evaluation: a tiny trained run answered, resumed, scored by exact match and by a fake judge."""

from __future__ import annotations

import json
import math
import socket
from pathlib import Path

import pytest
import tiktoken
import torch
from omegaconf import OmegaConf
from transformers import GPT2LMHeadModel

from lit_sft.cli.evaluate import evaluate
from lit_sft.curves import read_scalar
from lit_sft.evaluation import answers as answering
from lit_sft.evaluation.answers import read_responses
from lit_sft.evaluation.judge import Judge, JudgeSettings, JudgeUnavailable
from lit_sft.evaluation.scoring import exact_match_scores
from lit_sft.evaluation.summary import summarize
from lit_sft.model import GPT, GPTConfig
from lit_sft.prompts import prompt_style
from tests.evaluation.support import (
    QUICK,
    answers_file,
    answers_made,
    copy_run,
    eval_config,
    only_result,
    read_json,
    results_of,
    run_evaluate,
    synthetic_test_split,
    user_env,
)
from tests.helpers.config import TINY_RUN
from tests.helpers.llm_server import FakeLLMServer, Reply
from tests.helpers.scripts import run_script


def test_exact_match_on_a_tiny_run(tiny_run: Path, tmp_path: Path) -> None:
    run = copy_run(tiny_run, tmp_path / "run")
    summary = evaluate(eval_config(f"run_dir={run}", "scorer=exact_match", *QUICK))
    responses = read_json(answers_file(run))
    expected = synthetic_test_split()
    assert [{k: r[k] for k in expected[0]} for r in responses] == expected
    # Independently: transformers' greedy generation from the run's served folder, one prompt
    # at a time (no batching, no padding, no KV-cache code of ours).
    hf_model = GPT2LMHeadModel.from_pretrained(tiny_run).eval()
    tokenizer, style = tiktoken.get_encoding("gpt2"), prompt_style("alpaca")
    for entry, record in zip(expected, responses, strict=True):
        prompt = torch.tensor([tokenizer.encode(style.prompt(entry))])
        with torch.no_grad():
            out = hf_model.generate(prompt, max_new_tokens=4, do_sample=False, eos_token_id=50256)
        new = [t for t in out[0, prompt.shape[1] :].tolist() if t != 50256]
        assert record["model_response"] == style.extract_response(tokenizer.decode(new))
    hits = sum(r["model_response"].strip() == r["output"].strip() for r in responses)
    run_summary = read_json(run / "summary.json")
    assert summary == read_json(only_result(run).summary)
    assert summary["metric"] == "exact_match"
    n = len(expected)
    assert (summary["entries"], summary["scored"], summary["failures"]) == (n, n, 0)
    assert summary["mean"] == pytest.approx(100 * hits / n)
    assert summary["val_loss"] == pytest.approx(run_summary["val_loss"])
    assert read_scalar(run, f"eval/{summary['result']}/mean") == [
        (run_summary["steps"], pytest.approx(summary["mean"]))
    ]


def test_longest_prompts_are_answered_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    words = [1, 4, 2, 4, 3]
    entries = [{"instruction": "word " * n, "input": "", "output": "x"} for n in words]
    batches: list[list[int]] = []

    def record(model, prompts, **kwargs):
        # The instruction's word count, read back from each prompt.
        batches.append([tiktoken.get_encoding("gpt2").decode(p).count("word") for p in prompts])
        return [[] for _ in prompts]

    monkeypatch.setattr(answering, "generate", record)
    model = GPT(GPTConfig(vocab_size=8, context_length=8, emb_dim=4, n_layers=1, n_heads=1))
    answered, _ = answering.generate_responses(
        model, entries, prompt_style("phi3"), tmp_path / "a.json", batch_size=2, progress=False
    )
    assert batches == [[4, 4], [3, 2], [1]]
    assert [r["instruction"] for r in answered] == [e["instruction"] for e in entries]


def test_exact_match_counts_the_right_answers(
    tiny_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = copy_run(tiny_run, tmp_path / "run")
    tokenizer = tiktoken.get_encoding("gpt2")
    style = prompt_style("alpaca")
    split = synthetic_test_split()[:8]
    index_of = {tuple(tokenizer.encode(style.prompt(e))): i for i, e in enumerate(split)}
    batches: list[list[int]] = []

    def every_other_answer_right(model, prompts, **kwargs):
        batches.append([index_of[tuple(p)] for p in prompts])
        return [
            tokenizer.encode(f" {split[i]['output']}\n" if i % 2 == 0 else "wrong")
            for i in batches[-1]
        ]

    monkeypatch.setattr(answering, "generate", every_other_answer_right)
    summary = evaluate(eval_config(f"run_dir={run}", "scorer=exact_match", "limit=8", *QUICK))
    assert (summary["entries"], summary["scored"], summary["mean"]) == (8, 8, 50.0)
    # Synthetic prompts are all of one length, so they are answered in split order (see
    # test_longest_prompts_are_answered_first); the answers file keeps the split's order too.
    assert batches == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert [r["instruction"] for r in answers_made(run)] == [e["instruction"] for e in split]
    right = sum(len(tokenizer.encode(f" {e['output']}\n")) for e in split[::2])
    generation = summary["timing"]["generated"]
    assert (generation["answers"], generation["new_tokens"]) == (8, right + 4 * 1)
    assert generation["tokens_per_sec"] == pytest.approx(
        generation["new_tokens"] / generation["seconds"]
    )
    assert summary["std"] == pytest.approx(math.sqrt(8 * 50**2 / 7))
    half = 1.96 * summary["std"] / math.sqrt(8)
    assert summary["ci95"] == pytest.approx([50 - half, 50 + half])


def test_an_interrupted_evaluation_resumes(
    tiny_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = copy_run(tiny_run, tmp_path / "run")
    args = ["scorer=exact_match", "limit=12", *QUICK]  # three batches of 4
    cfg = eval_config(f"run_dir={run}", *args)
    real_generate = answering.generate
    answered: list[int] = []

    def generate_then_stop(model, prompts, **kwargs):
        if answered:
            raise KeyboardInterrupt
        answered.append(len(prompts))
        return real_generate(model, prompts, **kwargs)

    monkeypatch.setattr(answering, "generate", generate_then_stop)
    with pytest.raises(KeyboardInterrupt):
        evaluate(cfg)
    # Four answered, in their places among the twelve; the rest null until answered.
    assert len(answers_made(run)) == 4
    assert results_of(run) == []  # no scorer, no summary yet

    def counting_generate(model, prompts, **kwargs):
        answered.append(len(prompts))
        return real_generate(model, prompts, **kwargs)

    monkeypatch.setattr(answering, "generate", counting_generate)
    resumed_summary = evaluate(cfg)
    assert (
        resumed_summary["entries"] == 12 and resumed_summary["timing"]["generated"]["answers"] == 8
    )
    assert answered == [4, 4, 4]  # the first batch once, before the stop; the other two after
    resumed = read_json(answers_file(run))
    assert evaluate(cfg)["entries"] == 12 and answered == [4, 4, 4]  # nothing left to answer

    monkeypatch.setattr(answering, "generate", real_generate)
    uninterrupted = copy_run(tiny_run, tmp_path / "again")
    evaluate(eval_config(f"run_dir={uninterrupted}", *args))
    assert read_json(answers_file(uninterrupted)) == resumed


def test_weights_without_a_run_and_the_checkpoint_fallback(tiny_run: Path, tmp_path: Path) -> None:
    args = ["scorer=exact_match", "limit=4", *QUICK]
    evaluate(eval_config(f"run_dir={copy_run(tiny_run, tmp_path / 'run')}", *args))
    reference = read_json(answers_file(tmp_path / "run"))
    from_ckpt = copy_run(tiny_run, tmp_path / "ckpt", weights="checkpoints/last.ckpt")
    evaluate(eval_config(f"run_dir={from_ckpt}", *args))
    assert read_json(answers_file(from_ckpt)) == reference
    # The same model and data overrides as the run, given on the command line instead.
    same_as_run = [o for o in TINY_RUN if o.startswith(("model", "data"))]
    bare = eval_config(
        f"run_dir={tmp_path / 'bare'}",
        f"weights={tiny_run / 'model.safetensors'}",
        "prompt=alpaca",
        *same_as_run,
        *args,
    )
    summary = evaluate(bare)
    assert read_json(answers_file(tmp_path / "bare")) == reference
    assert summary["entries"] == 4 and summary["val_loss"] is None


def test_a_run_brings_its_own_model_and_a_non_run_needs_one(tiny_run: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="brings its own model"):
        evaluate(eval_config(f"run_dir={tiny_run}", "model=gpt2-small"))
    with pytest.raises(ValueError, match="not a training run"):
        evaluate(eval_config(f"run_dir={tmp_path}", "weights=x.safetensors"))
    with pytest.raises(ValueError, match="unknown scorer"):
        evaluate(eval_config(f"run_dir={tiny_run}", "scorer=bleu"))
    with pytest.raises(ValueError, match="limit=0 answers nothing"):
        evaluate(eval_config(f"run_dir={tiny_run}", "limit=0"))


def test_end_to_end_with_a_fake_ollama_judge(
    tiny_run: Path, tmp_path: Path, judge_server: FakeLLMServer
) -> None:
    run = copy_run(tiny_run, tmp_path / "run")
    # The third answer's request is refused for good: recorded as a failure, not raised.
    judge_server.reply_with("90", "70", Reply(text="bad request", status=400), "40")
    args = [f"run_dir={run}", f"judge.url={judge_server.url}", "limit=5", *QUICK]
    done = run_evaluate(args, user_env())
    assert done.returncode == 0, done.stderr
    summary = read_json(only_result(run).summary)
    assert summary["metric"] == "judge"
    assert (summary["entries"], summary["scored"], summary["failures"]) == (5, 4, 1)
    assert summary["mean"] == pytest.approx((90 + 70 + 40 + 85) / 4)  # 85: the server's default
    printed = done.stdout.splitlines()
    assert "failures  1" in printed and "mean      71.25" in printed
    assert (run / "eval" / ".hydra" / "config.yaml").is_file()
    assert (run / ".hydra" / "config.yaml").read_text() == (
        tiny_run / ".hydra" / "config.yaml"
    ).read_text()
    chats = judge_server.chats
    assert len(chats) == 5
    first = read_json(answers_file(run))[0]
    prompt = chats[0].body["messages"][0]["content"]
    assert first["instruction"] in prompt and first["model_response"] in prompt
    assert "### Instruction:" in prompt and chats[0].body["model"] == "llama3"

    # A rerun asks the judge only about the failed answer.
    summary = evaluate(eval_config(*args))
    assert (summary["scored"], summary["failures"]) == (5, 0)
    assert len(judge_server.chats) == 6
    assert len(only_result(run).scores.read_text().splitlines()) == 6


def test_end_to_end_with_a_fake_openai_judge_found_by_its_environment(
    tiny_run: Path, tmp_path: Path
) -> None:
    """judge=openai, its server and key from OPENAI_BASE_URL / OPENAI_API_KEY as vLLM users set."""
    server = FakeLLMServer(models=["judge-model"], api_key="sk-test")
    server.start()
    try:
        server.reply_with("10", "20", "60")
        run = copy_run(tiny_run, tmp_path / "run")
        env = user_env(OPENAI_BASE_URL=f"{server.url}/v1", OPENAI_API_KEY="sk-test")
        args = [f"run_dir={run}", "judge=openai", "judge.model=judge-model", "limit=3", *QUICK]
        done = run_evaluate(args, env)
    finally:
        server.stop()
    assert done.returncode == 0, done.stderr
    summary = read_json(only_result(run).summary)
    assert (summary["metric"], summary["entries"], summary["scored"]) == ("judge", 3, 3)
    assert summary["mean"] == pytest.approx(30.0)
    scores_path = only_result(run).scores
    assert [json.loads(line)["score"] for line in scores_path.read_text().splitlines()] == [
        10.0,
        20.0,
        60.0,
    ]
    assert [(c.path, c.body["model"]) for c in server.chats] == [
        ("/v1/chat/completions", "judge-model")
    ] * 3


def test_an_unreachable_judge_stops_early_and_keeps_the_answers(
    tiny_run: Path, tmp_path: Path
) -> None:
    with socket.socket() as sock:  # a port nothing listens on once the socket is closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    run = copy_run(tiny_run, tmp_path / "run")
    cfg = eval_config(f"run_dir={run}", f"judge.url=http://127.0.0.1:{port}", "limit=3", *QUICK)
    with pytest.raises(JudgeUnavailable, match="cannot reach the ollama judge"):
        evaluate(cfg)
    assert len(answers_made(run)) == 3
    assert not any(scores.summary.exists() for _, scores in results_of(run))


def test_summary_counts_failures_and_gives_a_normal_interval() -> None:
    summary = summarize("judge", [100.0, None, 0.0, 50.0], val_loss=0.5)
    assert (summary["entries"], summary["scored"], summary["failures"]) == (4, 3, 1)
    assert (summary["mean"], summary["std"]) == (50.0, 50.0)
    # 50 ± 1.96 · 50 / √3 = 50 ± 56.58 reaches past both ends of the scale: clipped to it.
    assert summary["ci95"] == [0.0, 100.0]
    assert summary["val_loss"] == 0.5 and "1.96" in summary["ci95_method"]
    nothing = summarize("judge", [None, None], val_loss=None)
    assert (nothing["scored"], nothing["failures"], nothing["mean"], nothing["ci95"]) == (
        0,
        2,
        None,
        None,
    )
    json.dumps(nothing)


def test_exact_match_compares_stripped_answers() -> None:
    entries = [
        {"output": "cba", "model_response": " cba\n"},
        {"output": "ABC", "model_response": "abc"},
        {"output": " 12 ", "model_response": "12"},
    ]
    assert exact_match_scores(entries) == [100.0, 0.0, 100.0]


def test_answers_from_another_split_are_not_resumed(tmp_path: Path) -> None:
    path = tmp_path / "answers.json"
    entries = synthetic_test_split()
    path.write_text(json.dumps([{**entries[1], "model_response": "x"}]))
    with pytest.raises(ValueError, match="does not match"):
        read_responses(path, entries)
    answers = [{**entry, "model_response": "x"} for entry in entries[:3]]
    path.write_text(json.dumps(answers[:1]))
    assert read_responses(path, entries) == answers[:1] + [None] * (len(entries) - 1)
    path.write_text(json.dumps([None, answers[1]]))  # a stopped run answers out of order
    assert read_responses(path, entries[:3]) == [None, answers[1], None]
    path.write_text(json.dumps(answers))  # from an earlier run that answered more
    assert read_responses(path, entries[:2]) == answers[:2]


@pytest.mark.parametrize("preset", ["ollama", "openai"])
def test_judge_config_maps_onto_judge(preset: str) -> None:
    cfg = eval_config(f"judge={preset}")
    judge = Judge(JudgeSettings(**OmegaConf.to_container(cfg.judge, resolve=True)))
    assert judge.settings.api == judge.api.name == preset
    defaults = eval_config()
    assert (defaults.scorer, defaults.batch_size, defaults.max_new_tokens) == ("judge", 32, 256)
    assert (defaults.judge.url, defaults.judge.model) == (None, "llama3")  # None: OLLAMA_HOST


def test_the_readme_demo_then_exact_match(tmp_path: Path) -> None:
    """`python train.py experiment=demo`, then `python evaluate.py run_dir=... scorer=exact_match`,
    shrunk to a few steps and test entries."""
    run = tmp_path / "demo"
    env = user_env()
    shrink = ["data.synthetic_size=400", "trainer.max_steps=3", "trainer.limit_val_batches=1"]
    for command in (
        ["train.py", "experiment=demo", *shrink, f"hydra.run.dir={run}"],
        ["evaluate.py", f"run_dir={run}", "scorer=exact_match", "limit=12", *QUICK],
    ):
        done = run_script(*command, env=env, timeout=None)
        assert done.returncode == 0, done.stderr[-3000:]
    assert read_json(run / "summary.json")["steps"] == 3
    answers = answers_made(run)
    # The demo's test split: the synthetic set of 400 in the demo's prompt style, first 12.
    expected = synthetic_test_split(400)[:12]
    assert [{k: a[k] for k in expected[0]} for a in answers] == expected
    right = sum(a["model_response"].strip() == a["output"].strip() for a in answers)
    summary = read_json(only_result(run).summary)
    assert (summary["metric"], summary["entries"], summary["scored"]) == ("exact_match", 12, 12)
    assert (summary["failures"], summary["mean"]) == (0, pytest.approx(100 * right / 12))
