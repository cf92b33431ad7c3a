from __future__ import annotations

import io
import subprocess
from pathlib import Path

import pytest
import torch

from lit_sft.chat import BANNER, PROMPT, Chat, Sampling, split_message, text_pieces
from lit_sft.checkpoints import export_hf
from lit_sft.generation import generate, stream
from lit_sft.model import GPT
from lit_sft.prompts import prompt_style
from lit_sft.tokenizer import Tokenizer
from tests.helpers.scripts import run_script
from tests.helpers.tiny_gpt import MODEL_ARGS as TINY_ARGS
from tests.helpers.tiny_gpt import tiny_model

MODEL_ARGS = [*TINY_ARGS, "prompt=alpaca"]


def expected_answer(model: GPT, instruction: str, input_text: str = "", **sampling) -> str:
    """The answer computed independently of the chat: generate() on the formatted prompt."""
    entry = {"instruction": instruction, "input": input_text}
    tokenizer = Tokenizer()
    prompt = tokenizer.encode(prompt_style("alpaca").prompt(entry))
    return tokenizer.decode(generate(model, [prompt], **sampling)[0])


@pytest.mark.parametrize("temperature", [0.0, 1.5])
def test_streamed_tokens_equal_generate(temperature: float) -> None:
    model = tiny_model()
    prompt = Tokenizer().encode("Below is an instruction.")
    args = dict(max_new_tokens=12, temperature=temperature, top_k=50)
    streamed = list(stream(model, prompt, generator=torch.Generator().manual_seed(1), **args))
    generated = generate(model, [prompt], generator=torch.Generator().manual_seed(1), **args)[0]
    assert streamed == generated and len(streamed) == 12
    # Stops at end of text, which it does not yield.
    stop = next(i for i, t in enumerate(streamed) if i and t not in streamed[:i])
    again = stream(
        model, prompt, eos_id=streamed[stop], generator=torch.Generator().manual_seed(1), **args
    )
    assert list(again) == streamed[:stop]


def test_text_pieces_hold_back_half_characters() -> None:
    tokenizer = Tokenizer()
    text = "héllo 😀 wörld"
    tokens = tokenizer.encode(text)
    assert len(tokens) > len(text.split())  # the emoji spans several tokens
    pieces = list(text_pieces(tokens, tokenizer))
    assert "".join(pieces) == text and not any("\ufffd" in p for p in pieces)
    assert len(pieces) > 3


def test_split_message_takes_an_optional_input() -> None:
    assert split_message("Rewrite this /input The cat sat.\n") == ("Rewrite this", "The cat sat.")
    assert split_message("What is 2+2?\n") == ("What is 2+2?", "")


def test_a_session_driven_through_stdin() -> None:
    model = tiny_model()
    chat = Chat(model, prompt_style("alpaca"), Sampling(max_new_tokens=6))
    out = io.StringIO()
    chat.session(
        io.StringIO("Name a color.\n\nSummarise /input A long text.\n/quit\nnever read\n"), out
    )
    first = expected_answer(model, "Name a color.", max_new_tokens=6)
    second = expected_answer(model, "Summarise", "A long text.", max_new_tokens=6)
    assert first != second
    # An empty line asks again without answering.
    assert out.getvalue() == f"{BANNER}{PROMPT}{first}\n{PROMPT}{PROMPT}{second}\n{PROMPT}"
    ended = io.StringIO()
    chat.session(io.StringIO("Name a color."), ended)  # end of input (Ctrl-D) without a newline
    assert ended.getvalue() == f"{BANNER}{PROMPT}{first}\n{PROMPT}\n"


def test_ctrl_c_stops_the_answer_not_the_session(monkeypatch) -> None:
    def interrupted(self, instruction: str, input_text: str = ""):
        yield "Hel"
        yield "lo"
        raise KeyboardInterrupt

    monkeypatch.setattr(Chat, "answer", interrupted)
    chat = Chat(tiny_model(), prompt_style("alpaca"), Sampling())
    out = io.StringIO()
    chat.session(io.StringIO("one\ntwo\n"), out)
    assert out.getvalue() == f"{BANNER}{PROMPT}Hello [stopped]\n{PROMPT}Hello [stopped]\n{PROMPT}\n"


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("weights")
    export_hf(tiny_model(), folder)
    return folder


def run_chat(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return run_script("chat.py", *args, stdin=stdin)


def test_single_shot_prints_only_the_answer(weights: Path) -> None:
    result = run_chat(
        f"weights={weights}", *MODEL_ARGS, "message=Name a color.", "max_new_tokens=8"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout == expected_answer(tiny_model(), "Name a color.", max_new_tokens=8) + "\n"


def test_interactive_session_over_a_pipe_with_sampling(weights: Path) -> None:
    args = ["temperature=0.8", "top_k=40", "seed=7", "max_new_tokens=8"]
    result = run_chat(f"weights={weights}", *MODEL_ARGS, *args, stdin="Name a color.\n")
    assert result.returncode == 0, result.stderr[-2000:]
    sampled = expected_answer(
        tiny_model(),
        "Name a color.",
        max_new_tokens=8,
        temperature=0.8,
        top_k=40,
        generator=torch.Generator().manual_seed(7),
    )
    assert result.stdout == f"{BANNER}{PROMPT}{sampled}\n{PROMPT}\n"


def test_missing_model_is_one_line(tmp_path: Path) -> None:
    result = run_chat("message=hi")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: chat.py needs run_dir=<run folder>, or weights=<file> model=<size> prompt=<style>"
    ]


def test_input_file_reaches_the_prompt_as_it_is(weights: Path, tmp_path: Path) -> None:
    # Brackets, a comma and a colon: text Hydra's override grammar would refuse in input=.
    text = "Hello (world), it is: fine.\nSecond line."
    (tmp_path / "text.txt").write_text(text)
    args = [f"weights={weights}", *MODEL_ARGS, "message=Summarise this.", "max_new_tokens=8"]
    result = run_chat(*args, f"input_file={tmp_path / 'text.txt'}")
    assert result.returncode == 0, result.stderr[-2000:]
    expected = expected_answer(tiny_model(), "Summarise this.", text, max_new_tokens=8)
    assert result.stdout == expected + "\n"
    assert expected != expected_answer(tiny_model(), "Summarise this.", max_new_tokens=8)

    missing = run_chat(*args, f"input_file={tmp_path / 'nope.txt'}")
    assert missing.returncode == 1
    assert missing.stderr.strip().splitlines() == [
        f"error: input_file={tmp_path / 'nope.txt'} is not a file; pass the path of a text file"
    ]


def test_input_and_input_file_together_are_refused(tmp_path: Path) -> None:
    from omegaconf import OmegaConf

    from lit_sft.cli.chat import input_text
    from lit_sft.errors import InvalidInput

    (tmp_path / "t.txt").write_text("file text")
    both = OmegaConf.create({"input": "typed", "input_file": str(tmp_path / "t.txt")})
    with pytest.raises(InvalidInput, match="pass input= or input_file=, not both"):
        input_text(both)
    assert input_text(OmegaConf.create({"input": "typed", "input_file": None})) == "typed"
    assert input_text(OmegaConf.create({"input": "", "input_file": str(tmp_path / "t.txt")})) == (
        "file text"
    )
