"""The exported chat template: apply_chat_template gives the tokens lit_sft trained on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from lit_sft.data.encoding import encode_entry
from lit_sft.export import export_for_serving
from lit_sft.model import GPT, GPTConfig
from lit_sft.prompts import PROMPT_STYLES, prompt_style
from lit_sft.serving.render import render_chat
from lit_sft.tokenizer import END_OF_TEXT, Tokenizer

ENTRIES = [
    {"instruction": "Rewrite the sentence in passive voice.", "input": ""},
    {"instruction": "Sort the numbers.", "input": "3, 1, 2"},
    {"instruction": "Summarise.", "input": "", "system": "You answer in one line."},
    {"instruction": "Translate into German.", "input": "thank you", "system": "Be formal."},
]
OUTPUT = "The cake was baked by Mary."


def messages_of(entry: dict[str, str]) -> list[dict[str, str]]:
    user = {"role": "user", "content": entry["instruction"]}
    if entry["input"]:
        user["input"] = entry["input"]
    system = [{"role": "system", "content": entry["system"]}] if "system" in entry else []
    return [*system, user]


@pytest.fixture(scope="module", params=sorted(PROMPT_STYLES))
def exported(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple:
    style = prompt_style(request.param)
    out = tmp_path_factory.mktemp(request.param)
    config = GPTConfig(vocab_size=50257, context_length=64, emb_dim=32, n_layers=1, n_heads=2)
    export_for_serving(GPT(config), out, style)
    return style, out


@pytest.mark.parametrize("fast", [True, False])
def test_apply_chat_template_gives_the_training_prompt_tokens(exported: tuple, fast: bool) -> None:
    style, out = exported
    hf = AutoTokenizer.from_pretrained(out, use_fast=fast)
    tokenizer = Tokenizer()
    for entry in ENTRIES:
        ids = hf.apply_chat_template(messages_of(entry), add_generation_prompt=True)["input_ids"]
        # The tokens training saw before the answer: the prompt, encoded alone.
        assert (
            ids
            == encode_entry({**entry, "output": OUTPUT}, style, tokenizer).tokens[: len(ids)]
            == tokenizer.encode(style.prompt(entry))
        ), entry
        # A whole example (add_generation_prompt off, the answer given): prompt, answer, end.
        turn = [*messages_of(entry), {"role": "assistant", "content": OUTPUT}]
        whole = hf.apply_chat_template(turn)["input_ids"]
        assert whole == encode_entry({**entry, "output": OUTPUT}, style, tokenizer).tokens + [
            END_OF_TEXT
        ]


def test_system_messages_by_hand(exported: tuple) -> None:
    style, out = exported
    text = AutoTokenizer.from_pretrained(out).apply_chat_template(
        messages_of(ENTRIES[2]), add_generation_prompt=True, tokenize=False
    )
    expected = {
        "alpaca": "Below is an instruction that describes a task. Write a response that "
        "appropriately completes the request.\n\n### Instruction:\nSummarise.\n\n### Response:\n",
        "phi3": "<|user|>\nSummarise.\n<|assistant|>:\n",
        "chatml": "<|im_start|>system\nYou answer in one line.<|im_end|>\n"
        "<|im_start|>user\nSummarise.<|im_end|>\n<|im_start|>assistant\n",
    }
    assert text == expected[style.name]


def test_the_template_renders_a_conversation_as_the_server_does(exported: tuple) -> None:
    style, out = exported
    chat = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "One?", "input": "1"},
        {"role": "assistant", "content": "One."},
        {"role": "user", "content": "Two?"},
    ]
    text = AutoTokenizer.from_pretrained(out).apply_chat_template(
        chat, add_generation_prompt=True, tokenize=False
    )
    assert text == render_chat(style, chat)


def test_every_export_without_a_style_has_no_template(tmp_path: Path) -> None:
    config = GPTConfig(vocab_size=50257, context_length=64, emb_dim=32, n_layers=1, n_heads=2)
    export_for_serving(GPT(config), tmp_path)
    assert "chat_template" not in json.loads((tmp_path / "tokenizer_config.json").read_text())
