"""The judge against a fake Ollama / OpenAI-compatible server on 127.0.0.1."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest

from lit_sft.evaluation.judge import (
    Judge,
    JudgeResult,
    JudgeSettings,
    JudgeUnavailable,
    parse_score,
    read_scores,
    score_entries,
)
from lit_sft.evaluation.judge.client import retry_after_s
from lit_sft.evaluation.judge.ollama import ollama_host_url
from lit_sft.evaluation.judge.prompts import judge_prompt
from tests.helpers.llm_server import FakeLLMServer, Reply

SECRET = "sk-test-do-not-leak-4242"


@pytest.fixture
def sleeps() -> list[float]:
    return []


def make_judge(judge_server: FakeLLMServer, sleeps: list[float], **kwargs: Any) -> Judge:
    kwargs = {"timeout_s": 5.0, "max_attempts": 3, "backoff_s": 0.5} | kwargs
    return Judge(JudgeSettings(url=judge_server.url, **kwargs), sleep=sleeps.append)


def make_entries(n: int) -> list[dict[str, str]]:
    return [
        {
            "instruction_text": f"Instruction {i}",
            "output": f"ref {i}",
            "model_response": f"resp {i}",
        }
        for i in range(n)
    ]


def scores_in_file(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_prompt_holds_instruction_reference_and_response() -> None:
    prompt = judge_prompt("Rewrite: the cat sat.", "The cat was sitting.", "A cat sat.")
    assert "Rewrite: the cat sat." in prompt
    assert "The cat was sitting." in prompt
    assert "A cat sat." in prompt
    assert prompt.index("The cat was sitting.") < prompt.index("A cat sat.")
    assert prompt == (
        "You are grading how well a model followed an instruction.\n\n"
        "Instruction and input:\nRewrite: the cat sat.\n\n"
        "Correct output:\nThe cat was sitting.\n\n"
        "Model response:\nA cat sat.\n\n"
        "Rate the model response on a scale from 0 to 100, where 100 means it is as good as the "
        "correct output. Reply with the integer only."
    )


@pytest.mark.parametrize(
    ("text", "score"),
    [
        ("85", 85),
        (" 85\n", 85),
        ("Score: 85", 85),
        ("I'd give it 85/100.", 85),
        ("On a scale from 0 to 100, I would give it 72.", 72),
        ("0", 0),
        ("100", 100),
    ],
)
def test_parse_score_finds_the_integer(text: str, score: int) -> None:
    assert parse_score(text) == score


@pytest.mark.parametrize("text", ["150", "-3", "Score: 101", "no idea", "", "8.5"])
def test_parse_score_rejects_out_of_range_and_missing_numbers(text: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_score(text)
    assert repr(text) in str(info.value)


def test_unknown_api_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="ollama, openai"):
        Judge(JudgeSettings(api="anthropic"))


@pytest.mark.parametrize("stream", [True, False])
def test_ollama_reply_streamed_or_not(
    judge_server: FakeLLMServer, sleeps: list[float], stream: bool
) -> None:
    judge_server.reply_with("Score: 85")
    result = make_judge(judge_server, sleeps, stream=stream).score("instr", "ref", "resp")
    assert result == JudgeResult(score=85.0, samples=[85], error=None)
    assert judge_server.chats[0].body["stream"] is stream


def test_ollama_request_body(judge_server: FakeLLMServer, sleeps: list[float]) -> None:
    make_judge(judge_server, sleeps, model="llama3").score("instr", "ref", "resp")
    (chat,) = judge_server.chats
    assert (chat.method, chat.path) == ("POST", "/api/chat")
    assert chat.body == {
        "model": "llama3",
        "messages": [{"role": "user", "content": judge_prompt("instr", "ref", "resp")}],
        "stream": True,
        "options": {"seed": 123, "temperature": 0.0, "num_ctx": 2048},
    }
    assert "Authorization" not in chat.headers


@pytest.mark.parametrize("reply", [Reply(text="I cannot judge this."), Reply(raw=b"<html>oops")])
def test_garbage_is_retried_then_recorded_as_failure(
    judge_server: FakeLLMServer, sleeps: list[float], reply: Reply
) -> None:
    judge_server.default_reply = reply
    result = make_judge(judge_server, sleeps, max_attempts=3, backoff_s=0.5).score("i", "r", "m")
    assert result.score is None and result.samples == []
    assert "attempt 3/3" in result.error
    assert len(judge_server.chats) == 3
    assert sleeps == [0.5, 1.0]  # exponential, and no sleep after the last attempt
    if reply.raw is None:
        assert "I cannot judge this." in result.error


@pytest.mark.parametrize("text", ["150", "-3"])
def test_out_of_range_is_rejected_and_retried(
    judge_server: FakeLLMServer, sleeps: list[float], text: str
) -> None:
    judge_server.reply_with(text)
    result = make_judge(judge_server, sleeps).score("i", "r", "m")
    assert result.score == 85.0
    assert len(judge_server.chats) == 2


def test_out_of_range_every_time_is_a_failure(
    judge_server: FakeLLMServer, sleeps: list[float]
) -> None:
    judge_server.default_reply = Reply(text="150")
    result = make_judge(judge_server, sleeps).score("i", "r", "m")
    assert result.score is None and "outside 0-100" in result.error


def test_server_errors_then_success(judge_server: FakeLLMServer, sleeps: list[float]) -> None:
    judge_server.reply_with(Reply(status=500, text="boom"), Reply(status=503, text="loading"))
    result = make_judge(judge_server, sleeps, max_attempts=4, backoff_s=0.25).score("i", "r", "m")
    assert result.score == 85.0
    assert len(judge_server.chats) == 3
    assert sleeps == [0.25, 0.5]


def test_client_errors_are_not_retried(judge_server: FakeLLMServer, sleeps: list[float]) -> None:
    judge_server.reply_with(Reply(status=404, text="model 'llama3' not found"))
    result = make_judge(judge_server, sleeps).score("i", "r", "m")
    assert result.score is None
    assert "404" in result.error and "not found" in result.error
    assert len(judge_server.chats) == 1 and sleeps == []


@pytest.mark.parametrize("stream", [True, False])
def test_slow_reply_times_out_and_is_retried(
    judge_server: FakeLLMServer, sleeps: list[float], stream: bool
) -> None:
    judge_server.reply_with(Reply(delay_s=30.0))
    result = make_judge(judge_server, sleeps, timeout_s=0.3, stream=stream).score("i", "r", "m")
    assert result.score == 85.0
    assert len(judge_server.chats) == 2 and len(sleeps) == 1


def test_stream_cut_before_done_is_retried(
    judge_server: FakeLLMServer, sleeps: list[float]
) -> None:
    judge_server.reply_with(Reply(text="40", cut_stream=True))
    result = make_judge(judge_server, sleeps).score("i", "r", "m")
    assert result.score == 85.0
    assert len(judge_server.chats) == 2


def test_samples_are_averaged_with_one_seed_each(
    judge_server: FakeLLMServer, sleeps: list[float]
) -> None:
    judge_server.reply_with("80", "Score: 90", "70")
    result = make_judge(judge_server, sleeps, samples=3, seed=7).score("i", "r", "m")
    assert result == JudgeResult(score=80.0, samples=[80, 90, 70], error=None)
    assert [c.body["options"]["seed"] for c in judge_server.chats] == [7, 8, 9]


def test_a_failed_sample_fails_the_entry(judge_server: FakeLLMServer, sleeps: list[float]) -> None:
    judge_server.reply_with("80")
    judge_server.default_reply = Reply(text="hmm")
    result = make_judge(judge_server, sleeps, samples=2, max_attempts=2).score("i", "r", "m")
    assert result.score is None and result.samples == [80]
    assert "hmm" in result.error


@pytest.mark.parametrize("model", ["llama3", "llama3:latest"])
def test_check_ready_matches_the_latest_tag(judge_server: FakeLLMServer, model: str) -> None:
    Judge(JudgeSettings(url=judge_server.url, model=model)).check_ready()
    assert [r.path for r in judge_server.requests] == ["/api/tags"]


@pytest.mark.parametrize("model", ["llama3:8b", "llama3.1", "mistral", "llama"])
def test_check_ready_names_the_missing_model(judge_server: FakeLLMServer, model: str) -> None:
    judge_server.models = ["llama3:latest", "phi3:mini"]
    with pytest.raises(JudgeUnavailable) as info:
        Judge(JudgeSettings(url=judge_server.url, model=model)).check_ready()
    message = str(info.value)
    assert judge_server.url in message
    assert "llama3:latest, phi3:mini" in message
    assert f"ollama pull {model}" in message


def test_check_ready_unreachable_server() -> None:
    gone = FakeLLMServer()
    gone.start()
    url = gone.url
    gone.stop()
    with pytest.raises(JudgeUnavailable) as info:
        Judge(JudgeSettings(url=url, timeout_s=2.0)).check_ready()
    assert f"cannot reach the ollama judge server at {url}" in str(info.value)
    assert "ollama serve" in str(info.value)


def test_openai_api_sends_the_key_from_the_env_var(
    judge_server: FakeLLMServer, sleeps: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JUDGE_KEY", SECRET)
    judge_server.api_key = SECRET
    judge_server.models = ["gpt-judge"]
    judge = make_judge(
        judge_server, sleeps, api="openai", model="gpt-judge", api_key_env="JUDGE_KEY"
    )
    judge.check_ready()
    assert judge.score("instr", "ref", "resp") == JudgeResult(85.0, [85], None)
    models, chat = judge_server.requests
    assert models.path == "/v1/models"
    assert models.headers["Authorization"] == f"Bearer {SECRET}"
    assert (chat.method, chat.path) == ("POST", "/v1/chat/completions")
    assert chat.headers["Authorization"] == f"Bearer {SECRET}"
    assert chat.body == {
        "model": "gpt-judge",
        "messages": [{"role": "user", "content": judge_prompt("instr", "ref", "resp")}],
        "stream": True,
        "seed": 123,
        "temperature": 0.0,
    }
    assert SECRET not in repr(judge) and SECRET not in str(vars(judge))


def test_openai_non_streamed_without_a_key(
    judge_server: FakeLLMServer, sleeps: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    judge_server.models = ["local"]
    judge = make_judge(judge_server, sleeps, api="openai", model="local", stream=False)
    judge.check_ready()
    judge_server.reply_with("Score: 64")
    assert judge.score("i", "r", "m").score == 64.0
    assert judge_server.chats[0].body["stream"] is False
    assert all("Authorization" not in r.headers for r in judge_server.requests)


def test_openai_check_ready_lists_served_models(
    judge_server: FakeLLMServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    judge_server.models = ["a-model", "b-model"]
    with pytest.raises(JudgeUnavailable, match="'gpt-judge' is not .* a-model, b-model"):
        Judge(JudgeSettings(url=judge_server.url, api="openai", model="gpt-judge")).check_ready()


def test_the_key_never_appears_in_errors(
    judge_server: FakeLLMServer, sleeps: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The fake echoes the request headers back, so only redaction keeps the key out.
    monkeypatch.setenv("JUDGE_KEY", SECRET)
    judge_server.api_key = "another-key"
    judge = make_judge(judge_server, sleeps, api="openai", api_key_env="JUDGE_KEY")
    with pytest.raises(JudgeUnavailable) as info:
        judge.check_ready()
    assert "401" in str(info.value) and "JUDGE_KEY" in str(info.value)
    assert SECRET not in str(info.value)

    judge_server.api_key = None
    judge_server.default_reply = Reply(status=500, echo_headers=True)
    result = judge.score("i", "r", "m")
    assert result.score is None and "Authorization" in result.error
    assert SECRET not in result.error


def test_score_entries_writes_one_line_per_entry(
    judge_server: FakeLLMServer, sleeps: list[float], tmp_path: Path
) -> None:
    judge_server.reply_with("10", "garbage", "garbage", "30")
    path = tmp_path / "run" / "scores.jsonl"
    judge = make_judge(judge_server, sleeps, max_attempts=2)
    results = score_entries(make_entries(3), judge, path, progress=False)
    assert [r.score for r in results.values()] == [10.0, None, 30.0]
    lines = scores_in_file(path)
    assert lines[0] == {"index": 0, "repeat": 0, "score": 10.0, "samples": [10], "error": None}
    assert [(line["index"], line["score"]) for line in lines] == [(0, 10.0), (1, None), (2, 30.0)]
    assert "garbage" in lines[1]["error"]
    assert read_scores(path) == results


def test_resume_skips_scored_entries(
    judge_server: FakeLLMServer, sleeps: list[float], tmp_path: Path
) -> None:
    path = tmp_path / "scores.jsonl"
    earlier = [
        {"index": 0, "score": 90.0, "samples": [90], "error": None},
        {"index": 1, "score": None, "samples": [], "error": "timeout"},
        {"index": 2, "score": 70.0, "samples": [70], "error": None},
        {"index": 2, "score": None, "samples": [], "error": "later lines win"},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in earlier) + '{"index": 3, "sco')
    judge = make_judge(judge_server, sleeps)
    results = score_entries(make_entries(4), judge, path, progress=False)
    assert [r.score for r in results.values()] == [90.0, 85.0, 85.0, 85.0]
    assert len(judge_server.chats) == 3
    assert read_scores(path) == results  # the truncated line did not swallow the next record

    judge_server.requests.clear()
    assert score_entries(make_entries(4), judge, path, progress=False) == results
    assert judge_server.requests == []


def test_server_gone_mid_run_loses_nothing(sleeps: list[float], tmp_path: Path) -> None:
    path = tmp_path / "scores.jsonl"
    dying = FakeLLMServer(stop_after_chats=2)
    dying.start()
    try:
        judge = make_judge(dying, sleeps, max_attempts=2)
        results = score_entries(make_entries(5), judge, path, progress=False)
    finally:
        dying.stop()
    assert [r.score for r in results.values()] == [85.0, 85.0, None, None, None]
    assert all("attempt 2/2" in r.error for r in list(results.values())[2:])
    assert [line["index"] for line in scores_in_file(path)] == [0, 1, 2, 3, 4]

    back = FakeLLMServer(default_reply=Reply(text="60"))
    back.start()
    try:
        results = score_entries(make_entries(5), make_judge(back, sleeps), path, progress=False)
    finally:
        back.stop()
    assert [r.score for r in results.values()] == [85.0, 85.0, 60.0, 60.0, 60.0]
    assert len(back.chats) == 3


def test_score_entries_fails_fast_when_the_model_is_missing(
    judge_server: FakeLLMServer, sleeps: list[float], tmp_path: Path
) -> None:
    judge_server.models = ["mistral:latest"]
    with pytest.raises(JudgeUnavailable, match="ollama pull llama3"):
        score_entries(make_entries(2), make_judge(judge_server, sleeps), tmp_path / "s.jsonl")
    assert judge_server.chats == []


# ---------------------------------------------------------------------------------------------
# Servers as their users configure them: environment, Retry-After, parallel requests


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("", "http://127.0.0.1:11434"),
        ("0.0.0.0", "http://0.0.0.0:11434"),
        ("gpu-box:8080", "http://gpu-box:8080"),
        (":9999", "http://127.0.0.1:9999"),
        ("https://ollama.example.com", "https://ollama.example.com:443"),
        ("http://gpu-box:1234/ollama/", "http://gpu-box:1234/ollama"),
    ],
)
def test_ollama_host_is_read_as_ollama_reads_it(host: str, url: str) -> None:
    assert ollama_host_url(host) == url


def test_server_defaults_come_from_the_environment(
    judge_server: FakeLLMServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("OLLAMA_HOST", "OPENAI_BASE_URL", "OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    assert Judge(JudgeSettings()).settings.url == "http://127.0.0.1:11434"
    assert Judge(JudgeSettings(api="openai")).settings.url == "http://localhost:8000"

    monkeypatch.setenv("OLLAMA_HOST", judge_server.url.removeprefix("http://"))  # host:port
    Judge(JudgeSettings()).check_ready()
    monkeypatch.setenv("OLLAMA_HOST", "127.0.0.1:9")
    assert (
        Judge(JudgeSettings(url=judge_server.url)).settings.url == judge_server.url
    )  # explicit wins

    judge_server.api_key, judge_server.models = SECRET, ["gpt-judge"]
    monkeypatch.setenv("OPENAI_BASE_URL", f"{judge_server.url}/v1")  # as OpenAI's clients take it
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    judge = Judge(JudgeSettings(api="openai", model="gpt-judge"))
    judge.check_ready()
    assert judge.score("i", "r", "a").score == 85.0
    assert judge_server.chats[-1].path == "/v1/chat/completions"
    assert judge_server.chats[-1].headers["Authorization"] == f"Bearer {SECRET}"


def test_retry_after_is_honoured_and_capped(
    judge_server: FakeLLMServer, sleeps: list[float]
) -> None:
    in_an_hour = format_datetime(datetime.now(timezone.utc) + timedelta(hours=1), usegmt=True)
    judge_server.reply_with(
        Reply(status=429, headers={"Retry-After": "7"}),
        Reply(status=503, headers={"Retry-After": in_an_hour}),
        Reply(status=503, headers={"Retry-After": "soon"}),  # unreadable: the usual backoff
        "42",
    )
    judge = make_judge(judge_server, sleeps, max_attempts=4, backoff_s=0.5, max_retry_after_s=30.0)
    assert judge.score("i", "r", "a") == JudgeResult(42.0, [42])
    assert sleeps == [7.0, 30.0, 2.0]


def test_retry_after_values() -> None:
    now = datetime.now(timezone.utc)
    assert retry_after_s("120") == 120.0
    assert retry_after_s(format_datetime(now + timedelta(seconds=30), usegmt=True)) == (
        pytest.approx(30.0, abs=2.0)
    )
    assert retry_after_s(format_datetime(now - timedelta(seconds=30), usegmt=True)) == 0.0
    assert retry_after_s(None) is None and retry_after_s("later") is None


def asked_index(body: dict[str, Any]) -> int:
    """The index of the entry a chat asks about (its response is "resp <i>")."""
    return int(body["messages"][0]["content"].split("Model response:\nresp ")[1].split("\n")[0])


def score_of_prompt(body: dict[str, Any]) -> Reply:
    """A score that depends on the entry asked about, whatever the arrival order."""
    return Reply(text=str(asked_index(body) * 7 % 101), delay_s=0.02)


def test_concurrent_scoring_gives_the_same_scores_in_entry_order(
    judge_server: FakeLLMServer, sleeps: list[float], tmp_path: Path
) -> None:
    judge_server.reply_for = score_of_prompt
    entries = make_entries(12)
    expected = {i: JudgeResult(float(i * 7 % 101), [i * 7 % 101]) for i in range(12)}
    one = score_entries(
        entries, make_judge(judge_server, sleeps), tmp_path / "1.jsonl", progress=False
    )
    assert one == expected and judge_server.max_in_flight == 1

    judge = make_judge(judge_server, sleeps, concurrency=4)
    four = score_entries(entries, judge, tmp_path / "4.jsonl", progress=False)
    assert list(four.items()) == list(expected.items())
    assert judge_server.max_in_flight > 1
    assert read_scores(tmp_path / "4.jsonl") == expected
    assert sorted(line["index"] for line in scores_in_file(tmp_path / "4.jsonl")) == list(range(12))


class CrashingJudge(Judge):
    """A judge whose process 'dies' (an exception escapes) at its `crash_at`-th score."""

    crash_at = 6

    def score(self, instruction: str, reference: str, response: str, **kw: int) -> JudgeResult:
        with self._sessions_lock:
            self.calls = getattr(self, "calls", 0) + 1
            crash = self.calls == self.crash_at
        if crash:
            raise KeyboardInterrupt
        return super().score(instruction, reference, response, **kw)


class RecordingJudge(Judge):
    """A judge that remembers the responses it was asked to score."""

    def score(self, instruction: str, reference: str, response: str) -> JudgeResult:
        with self._sessions_lock:
            self.responses = [*getattr(self, "responses", []), response]
        return super().score(instruction, reference, response)


def test_concurrent_scoring_stopped_midway_resumes_without_losing_or_redoing(
    judge_server: FakeLLMServer, sleeps: list[float], tmp_path: Path
) -> None:
    judge_server.reply_for = score_of_prompt
    entries, path = make_entries(12), tmp_path / "scores.jsonl"
    settings = JudgeSettings(url=judge_server.url, concurrency=4)
    with pytest.raises(KeyboardInterrupt):
        score_entries(entries, CrashingJudge(settings, sleep=sleeps.append), path, progress=False)
    written = scores_in_file(path)
    assert 0 < len(written) < 12
    assert all(line["score"] == line["index"] * 7 % 101 for line in written)

    # The stopped run's requests in flight may still reach the server (a killed process's would
    # not), so the resumed run's own calls are counted.
    resumed = RecordingJudge(settings, sleep=sleeps.append)
    results = score_entries(entries, resumed, path, progress=False)
    assert [r.score for r in results.values()] == [float(i * 7 % 101) for i in range(12)]
    redone = sorted(int(response.removeprefix("resp ")) for response in resumed.responses)
    assert redone == sorted(set(range(12)) - {line["index"] for line in written})


def test_each_entry_is_judged_on_its_own_instruction_reference_and_response(
    judge_server: FakeLLMServer, sleeps: list[float], tmp_path: Path
) -> None:
    score_entries(
        make_entries(2), make_judge(judge_server, sleeps), tmp_path / "s.jsonl", progress=False
    )
    asked = [chat.body["messages"][-1]["content"] for chat in judge_server.chats]
    assert asked == [judge_prompt(f"Instruction {i}", f"ref {i}", f"resp {i}") for i in (0, 1)]


def test_appending_after_a_complete_line_adds_no_blank_line(
    judge_server: FakeLLMServer, sleeps: list[float], tmp_path: Path
) -> None:
    path = tmp_path / "new" / "nested" / "scores.jsonl"  # folders made as needed
    first = score_entries(make_entries(1), make_judge(judge_server, sleeps), path, progress=False)
    assert (
        path.read_text()
        == '{"index": 0, "repeat": 0, "score": 85.0, "samples": [85], "error": null}\n'
    )
    judge_server.reply_with("40")
    score_entries(make_entries(2), make_judge(judge_server, sleeps), path, progress=False)
    assert path.read_text().splitlines() == [
        '{"index": 0, "repeat": 0, "score": 85.0, "samples": [85], "error": null}',
        '{"index": 1, "repeat": 0, "score": 40.0, "samples": [40], "error": null}',
    ]
    assert first[0].score == 85.0


def test_progress_bar_starts_at_the_resumed_entries_and_counts_failures(
    judge_server: FakeLLMServer, sleeps: list[float], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    path = tmp_path / "scores.jsonl"
    path.write_text('{"index": 0, "score": 90.0, "samples": [90], "error": null}\n')
    judge_server.reply_with("garbage", "garbage", "30")
    score_entries(make_entries(3), make_judge(judge_server, sleeps, max_attempts=2), path)
    renders = [r.strip() for r in capsys.readouterr().err.replace("\n", "\r").split("\r") if r]
    assert renders[0].startswith("judging:  33%|") and " 1/3 " in renders[0]
    assert renders[-1].startswith("judging: 100%|") and " 3/3 " in renders[-1]
    assert renders[-1].endswith(", failed=1]") and "entry" in renders[-1]


def test_parse_score_says_why_a_decimal_is_refused() -> None:
    with pytest.raises(ValueError) as error:
        parse_score("Score: 8.5")
    assert str(error.value) == "score 8.5 is not an integer in judge reply 'Score: 8.5'"


def test_retry_after_date_without_a_zone_is_read_as_utc() -> None:
    # "-0000" (RFC 2822: UTC, zone unknown) parses to a datetime without tzinfo.
    naive = (datetime.now(timezone.utc) + timedelta(seconds=30)).replace(tzinfo=None)
    value = format_datetime(naive)
    assert value.endswith("-0000")
    assert retry_after_s(value) == pytest.approx(30.0, abs=2.0)


def test_an_error_reply_is_recorded_with_its_first_300_characters(
    judge_server: FakeLLMServer, sleeps: list[float]
) -> None:
    body = "x" * 400
    judge_server.default_reply = Reply(status=500, text=body)
    result = make_judge(judge_server, sleeps, max_attempts=1).score("i", "r", "m")
    sent = json.dumps({"error": body})
    assert result == JudgeResult(None, [], f"attempt 1/1: HTTP 500: {sent[:300]}")


def test_redacted_key_reads_as_stars(
    judge_server: FakeLLMServer, sleeps: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JUDGE_KEY", SECRET)
    judge_server.default_reply = Reply(status=500, echo_headers=True)
    judge = make_judge(judge_server, sleeps, api="openai", api_key_env="JUDGE_KEY", max_attempts=1)
    assert '"Authorization": "Bearer ***"' in judge.score("i", "r", "m").error


def check_ready_error(judge_server: FakeLLMServer, **settings: Any) -> str:
    with pytest.raises(JudgeUnavailable) as info:
        Judge(JudgeSettings(url=judge_server.url, **settings)).check_ready()
    return str(info.value)


@pytest.mark.parametrize(
    ("status", "hint"),
    [
        (400, ""),
        (403, "; check the API key in the environment variable OPENAI_API_KEY"),
        (404, ""),
    ],
)
def test_check_ready_reports_an_error_status_with_the_first_300_characters(
    judge_server: FakeLLMServer, status: int, hint: str
) -> None:
    body = "y" * 400
    judge_server.models_reply = Reply(status=status, text=body)
    sent = json.dumps({"error": body})
    assert check_ready_error(judge_server) == (
        f"the judge server at {judge_server.url} answered {status}: {sent[:300]}{hint}"
    )


def test_check_ready_refuses_a_server_that_does_not_answer_like_the_api(
    judge_server: FakeLLMServer,
) -> None:
    body = b"<html>" + b"z" * 400
    judge_server.models_reply = Reply(raw=body)
    assert check_ready_error(judge_server) == (
        f"the server at {judge_server.url} does not answer like ollama: {body.decode()[:300]!r}"
    )


def test_check_ready_says_when_the_server_serves_no_models(judge_server: FakeLLMServer) -> None:
    judge_server.models = []
    assert "(it serves: no models);" in check_ready_error(judge_server)


def test_check_ready_gives_up_after_the_timeout(judge_server: FakeLLMServer) -> None:
    judge_server.models_reply = Reply(raw=b'{"models": [{"name": "llama3:latest"}]}', delay_s=3.0)
    assert "cannot reach the ollama judge server" in check_ready_error(judge_server, timeout_s=0.3)


def test_a_reply_of_another_shape_is_recorded_with_the_missing_key(
    judge_server: FakeLLMServer, sleeps: list[float]
) -> None:
    judge_server.default_reply = Reply(raw=b'{"answer": "85"}')
    result = make_judge(judge_server, sleeps, stream=False, max_attempts=1).score("i", "r", "m")
    assert result.error == "attempt 1/1: BadReply: unexpected reply shape (KeyError: 'message')"
