"""A chat (a list of OpenAI-style messages) as the text lit_sft trained on, in a prompt style.

Each user turn is `style.prompt(entry)` of the entry it makes; each assistant turn after it is the
answer and the end-of-text token, as a training example ends. A system message is rendered where
the style has a system turn (ChatML) and left out where it has none, as training leaves out an
entry's `system` field. A user message may carry an `input` field: Alpaca's input (the other
styles put it on a line of its own). `lit_sft.export.chat_template` renders the same text in Jinja.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from lit_sft.errors import InvalidInput
from lit_sft.prompts import PromptStyle

EOS_TEXT = "<|endoftext|>"
ROLES = ("system", "user", "assistant")


def message_text(content: Any, where: str) -> str:
    """A message's content as text: a string, or a list of `{"type": "text", "text": ...}` parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(
        isinstance(part, Mapping) and part.get("type") == "text" for part in content
    ):
        return "".join(str(part.get("text", "")) for part in content)
    raise InvalidInput(f"{where}.content must be a string or a list of text parts")


def system_turn(style: PromptStyle, system: str) -> str:
    """The text of a system message in `style` ('' where the style has no system turn)."""
    with_system = style.instruction_text({"system": system, "instruction": ""})
    return with_system.removesuffix(style.instruction_text({"instruction": ""}))


def render_chat(style: PromptStyle, messages: Sequence[Mapping[str, Any]]) -> str:
    """The prompt text of a chat whose last message is the user's: generation starts after it."""
    if not messages:
        raise InvalidInput("messages is empty: send at least one user message")
    parts: list[str] = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        role = message.get("role")
        if role not in ROLES:
            raise InvalidInput(f"{where}.role is {role!r}; use one of {', '.join(ROLES)}")
        text = message_text(message.get("content"), where)
        if role == "system":
            parts.append(system_turn(style, text))
        elif role == "user":
            entry = {"instruction": text, "input": str(message.get("input") or "")}
            parts.append(style.instruction_text(entry))
        else:
            if i == 0 or messages[i - 1].get("role") != "user":
                raise InvalidInput(f"{where} is an assistant message that follows no user message")
            parts.append(style.response_header + text + EOS_TEXT)
    if messages[-1].get("role") != "user":
        raise InvalidInput("the last message must be the user's: the model answers it")
    return "".join(parts) + style.response_header
