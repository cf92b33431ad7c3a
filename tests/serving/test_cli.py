"""`python serve.py` as a user runs it: a run folder's model and prompt style, every option."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from lit_sft.checkpoints import export_hf
from lit_sft.prompts import prompt_style
from tests.helpers.config import compose_config, save_run_config
from tests.helpers.scripts import script_env, start_script
from tests.helpers.tiny_gpt import MODEL_ARGS, tiny_model
from tests.serving.running import expected_answer


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder of the tests' tiny model, trained (as it were) in the phi3 style."""
    folder = tmp_path_factory.mktemp("runs") / "my-run"
    save_run_config(compose_config([*MODEL_ARGS, "prompt=phi3"], folder), folder)
    export_hf(tiny_model(), folder)
    return folder


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return start_script("serve.py", *args, env=script_env(**(env or {})))


@pytest.fixture
def server(run: Path) -> Iterator[tuple[str, dict[str, str]]]:
    port = free_port()
    options = ["model_name=mine", "max_tokens=5", "max_batch_size=3", "max_queue=7"]
    process = serve(
        f"run_dir={run}",
        f"port={port}",
        "api_key_env=MY_SERVER_KEY",
        "max_request_bytes=2000",
        *options,
        env={"MY_SERVER_KEY": "sk-local"},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, process.communicate()[1][-2000:]
            assert time.monotonic() < deadline, "serve.py did not start"
            try:
                httpx.get(url + "/health")
                break
            except httpx.TransportError:
                time.sleep(0.2)
        yield url, {"Authorization": "Bearer sk-local"}
    finally:
        process.terminate()
        process.communicate(timeout=30)


def test_serve_py_serves_the_run_with_its_options(server: tuple[str, dict[str, str]]) -> None:
    url, key = server
    health = httpx.get(url + "/health").json()
    assert (health["model"], health["max_batch_size"], health["max_queue"]) == ("mine", 3, 7)
    assert httpx.get(url + "/v1/models").status_code == 401
    assert httpx.get(url + "/v1/models", headers=key).json()["data"][0]["id"] == "mine"
    chat = {"model": "mine", "messages": [{"role": "user", "content": "Name a colour."}]}
    reply = httpx.post(url + "/v1/chat/completions", json=chat, headers=key, timeout=60).json()
    text, prompt_tokens, _ = expected_answer(
        tiny_model(), prompt_style("phi3"), "Name a colour.", 5
    )
    assert reply["choices"][0]["message"]["content"] == text  # the run's phi3 style
    assert reply["usage"]["prompt_tokens"] == prompt_tokens
    assert reply["usage"]["completion_tokens"] <= 5  # max_tokens=5 is the default
    over = httpx.post(url + "/v1/chat/completions", json={**chat, "max_tokens": 6}, headers=key)
    assert over.status_code == 400 and "at most 5" in over.json()["error"]["message"]
    big = {**chat, "messages": [{"role": "user", "content": "x" * 2100}]}
    assert httpx.post(url + "/v1/chat/completions", json=big, headers=key).status_code == 413


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["host=0.0.0.0"], {}, "error: host=0.0.0.0 would let other machines use the model"),
        (["api_key_env=NO_SUCH_KEY_VAR"], {}, "error: api_key_env=NO_SUCH_KEY_VAR, but"),
        (["max_queue=0"], {}, "error: max_queue=0: it must be at least 1"),
    ],
)
def test_mistakes_are_one_line(
    run: Path, args: list[str], env: dict[str, str], message: str
) -> None:
    process = serve(f"run_dir={run}", *args, env=env)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 1
    assert err.startswith(message) and err.count("\n") == 1, err
