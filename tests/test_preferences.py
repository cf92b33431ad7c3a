"""Preference pairs from a tiny model: choosing, sampling with resume, judge, rewrites, the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from omegaconf import OmegaConf, open_dict
from safetensors.torch import save_file

from lit_sft.cli.preferences import make_preferences
from lit_sft.data.preference import PreferenceDataModule
from lit_sft.data.sft import InstructionDataModule
from lit_sft.evaluation.judge import Judge, JudgeSettings
from lit_sft.model import GPT, GPTConfig
from lit_sft.preferences import (
    PairRule,
    SamplingOptions,
    choose_pair,
    rewrite_pairs,
    sample_answers,
    sampled_pairs,
    sampling,
)
from lit_sft.preferences.rewrite import rewrite_prompt
from lit_sft.prompts import prompt_style
from lit_sft.run_dir import RunDir
from tests.helpers.config import REPO, TINY_RUN, compose_config, save_run_config
from tests.helpers.llm_server import FakeLLMServer, Reply

ENTRY = {"instruction": "Add up the two numbers: 1 + 2", "input": "", "output": "3"}
QUICK = SamplingOptions(n=3, max_new_tokens=4, batch_size=2, prepack_weights=False)
STYLE = prompt_style("phi3")


pytestmark = pytest.mark.usefixtures("no_proxy")  # requests go to a stand-in on 127.0.0.1


@pytest.fixture(scope="module")
def model() -> GPT:
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=50257, context_length=64, emb_dim=16, n_layers=1, n_heads=2)
    return GPT(config).eval()


def entries(count: int) -> list[dict[str, str]]:
    return [{**ENTRY, "instruction": f"Add up the two numbers: {i} + 2"} for i in range(count)]


@pytest.mark.parametrize(
    ("scores", "use_reference", "expected"),
    [
        ([100, 0, 100, 0], True, ("a0", "a1", "answer")),  # best over worst
        ([40, 90, 10, 10], False, ("a1", "a2", "answer")),  # the first of the equal worst
        ([0, 0, 0, 0], True, ("3", "a0", "reference")),  # none right: the reference
        ([0, 0, 0, 0], False, None),  # all tie
        ([100, 100, 100, 100], True, None),  # all right: all tie
        ([100, None, 0, 0], True, None),  # a judge failure
    ],
)
def test_choose_pair(scores: list, use_reference: bool, expected: tuple | None) -> None:
    answers = ["a0", "a1", "a2", "a3"]
    pair, outcome = choose_pair(ENTRY, answers, scores, PairRule(100, use_reference))
    if expected is None:
        assert pair is None
        assert outcome == ("failed" if None in scores else "all_tie")
    else:
        assert (pair["chosen"], pair["rejected"], outcome) == expected
        assert pair["output"] == "3" and pair["instruction"] == ENTRY["instruction"]


def test_an_answer_equal_to_the_reference_is_no_pair() -> None:
    pair, outcome = choose_pair(ENTRY, ["3 ", "3"], [50, 50], PairRule(right_score=60))
    assert (pair, outcome) == (None, "all_tie")


def test_sampling_gives_n_answers_per_prompt_and_the_same_for_the_same_seed(
    model: GPT, tmp_path: Path
) -> None:
    first = sample_answers(model, entries(3), STYLE, tmp_path / "a.jsonl", QUICK, progress=False)
    again = sample_answers(model, entries(3), STYLE, tmp_path / "b.jsonl", QUICK, progress=False)
    assert [len(a) for a in first] == [3, 3, 3]
    assert first == again
    # Sampled, not greedy: some prompt gets two different answers.
    assert any(len(set(a)) > 1 for a in first)


def test_a_killed_sampling_resumes_without_repeating_a_finished_prompt(
    model: GPT, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    whole = sample_answers(
        model, entries(5), STYLE, tmp_path / "whole.jsonl", QUICK, progress=False
    )
    real_generate, asked = sampling.generate, []

    def killed_after_one_batch(model: GPT, prompts: list, **kwargs: Any) -> list:
        if asked:
            raise KeyboardInterrupt
        asked.append(len(prompts))
        return real_generate(model, prompts, **kwargs)

    monkeypatch.setattr(sampling, "generate", killed_after_one_batch)
    path = tmp_path / "killed.jsonl"
    with pytest.raises(KeyboardInterrupt):
        sample_answers(model, entries(5), STYLE, path, QUICK, progress=False)
    assert len(path.read_text().splitlines()) == 2  # the first batch of two prompts was kept

    def counting(model: GPT, prompts: list, **kwargs: Any) -> list:
        asked.append(len(prompts))
        return real_generate(model, prompts, **kwargs)

    monkeypatch.setattr(sampling, "generate", counting)
    resumed = sample_answers(model, entries(5), STYLE, path, QUICK, progress=False)
    assert asked == [6, 6, 3]  # rows: the killed run's batch, then only prompts 2-3 and 4
    assert resumed == whole
    sample_answers(model, entries(5), STYLE, path, QUICK, progress=False)
    assert asked == [6, 6, 3]  # finished: nothing sampled again


def test_another_n_than_the_saved_answers_is_refused(model: GPT, tmp_path: Path) -> None:
    sample_answers(model, entries(2), STYLE, tmp_path / "s.jsonl", QUICK, progress=False)
    with pytest.raises(ValueError, match="holds 3 answers for prompt 0, not n=4; pass n=3"):
        options = SamplingOptions(n=4, max_new_tokens=4, prepack_weights=False)
        sample_answers(model, entries(2), STYLE, tmp_path / "s.jsonl", options, progress=False)


def test_resuming_with_other_sampling_options_is_refused(model: GPT, tmp_path: Path) -> None:
    rule = PairRule()
    sampled_pairs(model, {"train": entries(2)}, STYLE, tmp_path, QUICK, rule, progress=False)
    hotter = SamplingOptions(**{**QUICK.__dict__, "temperature": 0.5})
    with pytest.raises(ValueError, match="were sampled with temperature=1.0; pass the same"):
        sampled_pairs(model, {"train": entries(2)}, STYLE, tmp_path, hotter, rule, progress=False)


def checksum(text: str) -> int:
    return sum(map(ord, text)) % 101


def judge_for(judge_server: FakeLLMServer, **kwargs: Any) -> Judge:
    settings = {"url": judge_server.url, "timeout_s": 5.0, "max_attempts": 2, "backoff_s": 0.0}
    return Judge(JudgeSettings(**settings | kwargs), sleep=lambda s: None)


def test_judge_scores_make_pairs_and_ties_are_skipped_and_counted(
    model: GPT, judge_server: FakeLLMServer, tmp_path: Path
) -> None:
    answers = sample_answers(model, entries(4), STYLE, tmp_path / "train-samples.jsonl", QUICK)

    def score(body: dict) -> Reply:
        # Prompt 0's answers all score 70 (a tie); the others by a checksum of the answer.
        prompt = body["messages"][0]["content"]
        if ": 0 + 2" in prompt:
            return Reply("70")
        response = prompt.split("Model response:\n")[1].split("\n\nRate")[0]
        return Reply(str(checksum(response)))

    judge_server.reply_for = score
    rule = PairRule(right_score=0, use_reference=False)
    with judge_for(judge_server, concurrency=3) as judge:
        pairs, counts = sampled_pairs(
            model, {"train": entries(4)}, STYLE, tmp_path, QUICK, rule, judge, progress=False
        )
    assert len(judge_server.chats) == 4 * 3
    expected = []
    for i, its in enumerate(answers[1:], start=1):
        sums = [checksum(a) for a in its]
        if max(sums) > min(sums):
            expected.append((i, its[sums.index(max(sums))], its[sums.index(min(sums))]))
    got = [(int(p["instruction"].split(": ")[1][0]), p["chosen"], p["rejected"]) for p in pairs]
    assert got == expected
    assert counts["train"]["all_tie"] == 4 - len(expected) >= 1
    assert {p["split"] for p in pairs} == {"train"}
    with judge_for(judge_server) as judge:  # resumed: every score is kept, no request is made
        sampled_pairs(model, {"train": entries(4)}, STYLE, tmp_path, QUICK, rule, judge)
    assert len(judge_server.chats) == 4 * 3


def test_failed_judge_scores_are_counted_then_asked_again(
    model: GPT, judge_server: FakeLLMServer, tmp_path: Path
) -> None:
    judge_server.reply_with(
        *[Reply("down", status=500)] * 2
    )  # the first answer fails both attempts
    rule = PairRule(right_score=50)
    with judge_for(judge_server) as judge:
        _, counts = sampled_pairs(
            model, {"train": entries(2)}, STYLE, tmp_path, QUICK, rule, judge, progress=False
        )
    assert counts["train"]["failed"] == 1 and len(judge_server.chats) == 2 + 5
    with judge_for(judge_server) as judge:
        _, counts = sampled_pairs(
            model, {"train": entries(2)}, STYLE, tmp_path, QUICK, rule, judge, progress=False
        )
    assert counts["train"]["failed"] == 0 and len(judge_server.chats) == 2 + 5 + 1


def test_rewrites_ask_for_a_polite_and_an_impolite_answer(
    judge_server: FakeLLMServer, tmp_path: Path
) -> None:
    judge_server.reply_for = lambda body: Reply(
        "Please: 3." if "more polite." in body["messages"][0]["content"] else "3, obviously."
    )
    path = tmp_path / "rewrites.jsonl"
    with judge_for(judge_server, concurrency=2) as judge:
        pairs, counts = rewrite_pairs(entries(3), judge, path, "train", progress=False)
    assert [(p["chosen"], p["rejected"], p["output"]) for p in pairs] == [
        ("Please: 3.", "3, obviously.", "3")
    ] * 3
    assert counts == {"answer": 3, "reference": 0, "all_tie": 0, "failed": 0}
    asked = sorted(chat.body["messages"][0]["content"] for chat in judge_server.chats)
    assert asked == sorted(rewrite_prompt(e, p) for e in entries(3) for p in ("polite", "impolite"))
    prompt = rewrite_prompt(entries(3)[0], "polite")
    assert "and correct output `3`, slightly rewrite the output to be more" in prompt
    with judge_for(judge_server) as judge:
        rewrite_pairs(entries(3), judge, path, "train", progress=False)
    assert len(judge_server.chats) == 6  # resumed: nothing asked again


def tiny_sft_run(tmp_path: Path) -> Path:
    """A run folder as training leaves it: its config and (random) exported weights."""
    run = tmp_path / "sft"
    cfg = save_run_config(compose_config(TINY_RUN, run), run)
    arch = OmegaConf.to_container(cfg.model.arch, resolve=True)
    torch.manual_seed(0)
    model = GPT(GPTConfig(**{"tie_weights": cfg.model.tie_weights, **arch}))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, run / "model.safetensors")
    return run


def test_the_command_writes_pairs_and_the_runs_own_test_split(tmp_path: Path) -> None:
    run = tiny_sft_run(tmp_path)
    overrides = ["limit=6", "val_limit=3", "n=2", "max_new_tokens=3", "batch_size=3"]
    cfg = compose_config(overrides, run, config_name="preferences")
    summary = make_preferences(cfg)
    written = json.loads(RunDir(run).preferences.read_text())
    sft = InstructionDataModule(path=None, synthetic_size=200, seed=123)
    sft.setup("test")
    # The random model gets nothing right: the reference is chosen over its first answer.
    assert summary["outcomes"]["train"] == {"answer": 0, "reference": 6, "all_tie": 0, "failed": 0}
    assert summary["pair_counts"] == {"train": 6, "val": 3}
    train = [e for e in written if e["split"] == "train"]
    assert [e["chosen"] for e in train] == [e["output"] for e in sft.splits["train"][:6]]
    # A DPO run on the file has the SFT run's own test split, so both score the same entries.
    dpo = PreferenceDataModule(path=str(RunDir(run).preferences), batch_size=2)
    dpo.setup("fit")
    assert [e["instruction"] for e in dpo.splits["test"]] == [
        e["instruction"] for e in sft.splits["test"]
    ]
    assert [e["output"] for e in dpo.splits["test"]] == [e["output"] for e in sft.splits["test"]]
    assert len(dpo.splits["train"]) == 6 and len(dpo.splits["val"]) == 3
    assert (
        json.loads((run / "preferences" / "summary.json").read_text())["pair_counts"]["train"] == 6
    )


def test_the_command_refuses_what_it_cannot_use(tmp_path: Path) -> None:
    run = tiny_sft_run(tmp_path)
    cfg = compose_config(["pairs=shout"], run, config_name="preferences")
    with pytest.raises(ValueError, match="pairs=shout, scorer=exact_match: choose pairs"):
        make_preferences(cfg)
    cfg = compose_config(["use_reference=false", "limit=2", "max_new_tokens=2"], run, "preferences")
    with open_dict(cfg):
        cfg.n = 2
    with pytest.raises(ValueError, match="no train pairs from"):
        make_preferences(cfg)


def test_python_m_lit_sft_preferences_reports_a_missing_run_in_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "LIT_SFT_DEBUG": "0", "HYDRA_FULL_ERROR": "0"}
    result = subprocess.run(
        [sys.executable, "-m", "lit_sft.preferences", f"run_dir={tmp_path / 'nowhere'}"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'nowhere'} is not a training run (no .hydra/config.yaml); "
        "pass run_dir=<the folder of an SFT run>"
    ]
