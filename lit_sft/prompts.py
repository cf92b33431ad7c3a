"""Prompt styles: how an `{instruction, input, output}` entry becomes text, chosen by name."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

from lit_sft.errors import InvalidInput


class PromptStyle:
    """A prompt format; training text is `prompt(entry) + entry["output"]`.

    The instruction text is `instruction_prefix + instruction`, then `input_prefix + input` when
    the entry has an input.
    """

    name: ClassVar[str]
    instruction_prefix: ClassVar[str]
    input_prefix: ClassVar[str]
    response_header: ClassVar[str]

    def instruction_text(self, entry: Mapping[str, str]) -> str:
        """The formatted instruction and input, without the response header."""
        text = self.instruction_prefix + entry["instruction"]
        if entry.get("input"):
            text += self.input_prefix + entry["input"]
        return text

    def prompt(self, entry: Mapping[str, str]) -> str:
        """Everything the model sees before its answer: generation starts right after this."""
        return self.instruction_text(entry) + self.response_header

    def extract_response(self, text: str) -> str:
        """The answer in generated `text`: what follows the response header if any, stripped."""
        _, header, answer = text.partition(self.response_header.strip())
        return (answer if header else text).strip()


class Alpaca(PromptStyle):
    """The Alpaca format the book's chapter 7 uses."""

    name = "alpaca"
    instruction_prefix = (
        "Below is an instruction that describes a task. "
        "Write a response that appropriately completes the request.\n\n### Instruction:\n"
    )
    input_prefix = "\n\n### Input:\n"
    response_header = "\n\n### Response:\n"


class Phi3(PromptStyle):
    """Microsoft's Phi-3 chat format, as in the book's exercise 7.1."""

    name = "phi3"
    instruction_prefix = "<|user|>\n"
    input_prefix = "\n"
    response_header = "\n<|assistant|>:\n"


class ChatML(PromptStyle):
    """OpenAI's ChatML turns; a `system` turn only for entries with a `system` field."""

    name = "chatml"
    instruction_prefix = "<|im_start|>user\n"
    input_prefix = "\n"
    response_header = "<|im_end|>\n<|im_start|>assistant\n"

    def instruction_text(self, entry: Mapping[str, str]) -> str:
        system = f"<|im_start|>system\n{entry['system']}<|im_end|>\n" if entry.get("system") else ""
        return system + super().instruction_text(entry)


@dataclass(frozen=True)
class SamplePrompt:
    """A validation prompt to answer while training: its text, tokens and reference answer."""

    text: str
    tokens: list[int]
    reference: str


PROMPT_STYLES: Mapping[str, type[PromptStyle]] = {
    style.name: style for style in (Alpaca, Phi3, ChatML)
}


def prompt_style(name: str) -> PromptStyle:
    """The prompt style registered under `name`."""
    try:
        return PROMPT_STYLES[name]()
    except KeyError:
        raise InvalidInput(
            f"unknown prompt style {name!r}; valid styles: {', '.join(sorted(PROMPT_STYLES))}"
        ) from None
