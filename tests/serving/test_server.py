"""The server through the official `openai` client: answers equal `generate`, errors, limits."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from lit_sft.model import GPT
from lit_sft.prompts import prompt_style
from lit_sft.tokenizer import Tokenizer
from tests.helpers.tiny_gpt import tiny_model
from tests.serving.running import (
    NAME,
    Probe,
    expected_answer,
    running_server,
    wait_until,
)

QUESTIONS = [
    "Name a colour.",
    "What is the capital of France?",
    "Rewrite the sentence in passive voice: The cat chased the mouse.",
    "Give a synonym of happy.",
    "Convert 5 km to metres.",
    "Translate 'thank you' into German.",
]


@pytest.fixture(scope="module")
def model() -> GPT:
    return tiny_model()


def client(url: str, key: str = "unused", **kwargs: object) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, **kwargs)


def ask(url: str, question: str, max_tokens: int, stream: bool, **kwargs: object) -> str:
    """The answer to one user message, joined from the stream's deltas when streamed."""
    messages = [{"role": "user", "content": question}]
    reply = client(url).chat.completions.create(
        model=NAME, messages=messages, max_tokens=max_tokens, stream=stream, **kwargs
    )
    if not stream:
        return reply.choices[0].message.content
    return "".join(chunk.choices[0].delta.content or "" for chunk in reply if chunk.choices)


@pytest.mark.parametrize("stream", [False, True])
def test_a_chat_answer_equals_generate_with_its_usage(model: GPT, stream: bool) -> None:
    text, prompt_tokens, answer_tokens = expected_answer(
        model, prompt_style("alpaca"), QUESTIONS[1], 24
    )
    with running_server(model) as server:
        assert ask(server.url, QUESTIONS[1], 24, stream) == text
        messages = [{"role": "user", "content": QUESTIONS[1]}]
        reply = client(server.url).chat.completions.create(
            model=NAME,
            messages=messages,
            max_tokens=24,
            stream=stream,
            **({"stream_options": {"include_usage": True}} if stream else {}),
        )
        chunks = list(reply) if stream else [reply]
        usage = chunks[-1].usage
        finish = [c.choices[0].finish_reason for c in chunks if c.choices][-1]
    assert (usage.prompt_tokens, usage.completion_tokens) == (prompt_tokens, answer_tokens)
    assert usage.total_tokens == prompt_tokens + answer_tokens
    assert finish == ("length" if answer_tokens == 24 else "stop")


def test_several_clients_at_once_are_batched_and_each_gets_its_own_answer(model: GPT) -> None:
    style = prompt_style("alpaca")
    expected = [expected_answer(model, style, q, 16)[0] for q in QUESTIONS]
    probe = Probe(model)
    probe.gate.clear()  # the first request holds the engine until the others wait
    with running_server(model, max_batch_size=8) as server, ThreadPoolExecutor(6) as pool:
        streams = [i % 2 == 0 for i in range(len(QUESTIONS))]
        first = pool.submit(ask, server.url, QUESTIONS[0], 16, streams[0])
        wait_until(lambda: server.engine.running == 1)
        rest = [
            pool.submit(ask, server.url, q, 16, s)
            for q, s in zip(QUESTIONS[1:], streams[1:], strict=True)
        ]
        wait_until(lambda: len(server.engine.waiting) == len(QUESTIONS) - 1)
        probe.gate.set()
        answers = [first.result(timeout=60)] + [f.result(timeout=60) for f in rest]
    assert answers == expected
    # The others joined the first request's batch after its first step: six rows decoded at once.
    assert server.engine.batch_sizes == [1] and server.engine.joined == len(QUESTIONS) - 1
    assert max(probe.rows) == len(QUESTIONS)


def test_completions_take_text_or_tokens_and_stop_before_a_stop_string(model: GPT) -> None:
    text, _, _ = expected_answer(model, prompt_style("alpaca"), QUESTIONS[0], 20)
    prompt = prompt_style("alpaca").prompt({"instruction": QUESTIONS[0]})
    stop = text[5:9]
    assert text.find(stop) == 5
    with running_server(model) as server:
        api = client(server.url).completions
        whole = api.create(model=NAME, prompt=prompt, max_tokens=20)
        by_ids = api.create(model=NAME, prompt=Tokenizer().encode(prompt), max_tokens=20)
        cut = api.create(model=NAME, prompt=prompt, max_tokens=20, stop=["zzzz", stop])
        streamed = api.create(model=NAME, prompt=prompt, max_tokens=20, stop=stop, stream=True)
        pieces = list(streamed)
    assert whole.choices[0].text == by_ids.choices[0].text == text
    assert cut.choices[0].text == text[:5] and cut.choices[0].finish_reason == "stop"
    assert "".join(p.choices[0].text for p in pieces) == text[:5]
    assert pieces[-1].choices[0].finish_reason == "stop"
    assert whole.object == "text_completion"


def test_seeded_sampling_repeats_and_the_seed_matters(model: GPT) -> None:
    with running_server(model) as server:
        draws = [
            ask(server.url, QUESTIONS[2], 12, False, temperature=1.5, top_p=0.9, seed=seed)
            for seed in (1, 1, 2)
        ]
    assert draws[0] == draws[1] != draws[2]


def test_bad_requests_get_openai_errors_and_the_server_keeps_serving(model: GPT) -> None:
    too_long = "word " * 200  # well past the 128-token context
    with running_server(model, max_tokens=32, max_request_bytes=4096) as server:
        api = client(server.url).chat.completions
        messages = [{"role": "user", "content": QUESTIONS[0]}]
        with pytest.raises(openai.NotFoundError) as unknown:
            api.create(model="gpt-4o", messages=messages)
        assert unknown.value.code == "model_not_found" and "gpt-4o" in unknown.value.message
        with pytest.raises(openai.BadRequestError) as long_prompt:
            api.create(model=NAME, messages=[{"role": "user", "content": too_long}])
        assert long_prompt.value.code == "context_length_exceeded"
        assert "maximum context length is 128 tokens" in long_prompt.value.message
        with pytest.raises(openai.BadRequestError) as overflow:
            api.create(model=NAME, messages=messages, max_tokens=120)  # 34 + 120 > 128
        assert overflow.value.code == "context_length_exceeded"
        for bad, param in [
            ({"temperature": 5.0}, "temperature"),
            ({"max_tokens": 0}, "max_tokens"),
            ({"max_tokens": 33}, "max_tokens"),
            ({"top_p": 0.0}, "top_p"),
            ({"n": 2}, "n"),
            ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ]:
            with pytest.raises(openai.BadRequestError) as refused:
                api.create(model=NAME, messages=messages, **bad)
            assert refused.value.param == param, bad
        with pytest.raises(openai.BadRequestError) as no_user:
            api.create(model=NAME, messages=[{"role": "robot", "content": "hi"}])
        assert "messages[0].role" in no_user.value.message
        raw = httpx.post(server.url + "/v1/chat/completions", content=b"{not json")
        assert raw.status_code == 400 and "not JSON" in raw.json()["error"]["message"]
        huge = httpx.post(server.url + "/v1/completions", content=b"x" * 5000)
        assert huge.status_code == 413 and huge.json()["error"]["code"] == "request_too_large"
        assert ask(server.url, QUESTIONS[0], 4, True)  # still serving
        assert httpx.get(server.url + "/health").json()["status"] == "ok"


def test_a_key_is_required_when_set(model: GPT) -> None:
    with running_server(model, api_key="sk-secret") as server:
        messages = [{"role": "user", "content": QUESTIONS[0]}]
        for key in ("", "sk-wrong"):
            bare = client(server.url, key or "x")
            if not key:
                bare = client(server.url, "x", default_headers={"Authorization": ""})
            with pytest.raises(openai.AuthenticationError) as refused:
                bare.chat.completions.create(model=NAME, messages=messages, max_tokens=2)
            assert refused.value.code == "invalid_api_key"
            with pytest.raises(openai.AuthenticationError):
                bare.models.list()
        keyed = client(server.url, "sk-secret")
        assert keyed.models.list().data[0].id == NAME
        assert keyed.chat.completions.create(model=NAME, messages=messages, max_tokens=2).usage
        assert httpx.get(server.url + "/health").status_code == 200


def test_a_full_queue_answers_429_and_the_waiting_requests_still_finish(model: GPT) -> None:
    probe = Probe(model)
    probe.gate.clear()
    with running_server(model, max_batch_size=1, max_queue=1) as server:
        with ThreadPoolExecutor(2) as pool:
            running = pool.submit(ask, server.url, QUESTIONS[0], 4, False)
            wait_until(lambda: server.engine.running == 1)
            waiting = pool.submit(ask, server.url, QUESTIONS[1], 4, True)
            wait_until(lambda: len(server.engine.waiting) == 1)
            messages = [{"role": "user", "content": QUESTIONS[2]}]
            with pytest.raises(openai.RateLimitError) as full:  # at once, not after a wait
                client(server.url, timeout=5).chat.completions.create(
                    model=NAME, messages=messages, max_tokens=4
                )
            assert full.value.code == "queue_full"
            assert full.value.response.headers["retry-after"] == "1"
            probe.gate.set()
            assert running.result(timeout=60) and waiting.result(timeout=60)
        assert ask(server.url, QUESTIONS[2], 4, False)


def test_a_client_that_leaves_mid_stream_frees_its_row(model: GPT) -> None:
    staying = expected_answer(model, prompt_style("alpaca"), QUESTIONS[1], 60)[0]
    probe = Probe(model, delay_s=0.01)
    probe.gate.clear()
    body = {"model": NAME, "messages": [{"role": "user", "content": QUESTIONS[0]}]}
    with running_server(model) as server, ThreadPoolExecutor(2) as pool:
        # A first request holds the engine until both others wait, so they join it together.
        blocker = pool.submit(ask, server.url, QUESTIONS[2], 1, False)
        wait_until(lambda: server.engine.running == 1)
        stays = pool.submit(ask, server.url, QUESTIONS[1], 60, True)
        request = {**body, "stream": True, "max_tokens": 60}
        with httpx.stream("POST", server.url + "/v1/chat/completions", json=request) as leaving:
            wait_until(lambda: len(server.engine.waiting) == 2)
            steps_before = len(probe.rows)
            probe.gate.set()
            chunks = 0
            for line in leaving.iter_lines():
                chunks += line.startswith("data: ")
                if chunks == 4:
                    break
        assert blocker.result(timeout=60) and stays.result(timeout=60) == staying
        assert server.engine.batch_sizes == [1] and server.engine.joined == 2
    rows = probe.rows[steps_before + 1 :]  # the shared batch's steps
    # The leaving row is dropped a few steps after its client left, not after its 60 tokens.
    assert rows.count(2) < 20 and rows.count(1) > 30
