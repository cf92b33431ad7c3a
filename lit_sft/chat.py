"""Talk to a finetuned model: each message in the run's prompt style, the answer streamed."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TextIO

import torch

from lit_sft.generation import stream
from lit_sft.model import GPT
from lit_sft.prepack import prepacked_linears
from lit_sft.prompts import PromptStyle
from lit_sft.tokenizer import Tokenizer

QUIT = "/quit"
INPUT_SEPARATOR = " /input "
BANNER = (
    "Chat with the model: one message per line; add ' /input <text>' for Alpaca's input field.\n"
    "Ctrl-C stops an answer; Ctrl-D or /quit leaves.\n"
)
PROMPT = ">>> "


@dataclass(frozen=True)
class Sampling:
    """How answers are drawn: greedy for temperature 0, else seeded sampling."""

    temperature: float = 0.0
    top_k: int | None = None
    max_new_tokens: int = 256
    seed: int = 123


def split_message(message: str) -> tuple[str, str]:
    """(instruction, input) of a chat line: `Summarise this /input The text...`."""
    instruction, _, extra = message.partition(INPUT_SEPARATOR)
    return instruction.strip(), extra.strip()


def text_pieces(tokens: Iterable[int], tokenizer: Tokenizer) -> Iterator[str]:
    """The decoded text of a token stream, piece by piece as it grows.

    A character can span several tokens; a piece is held back while it ends in an incomplete one.
    """
    tokens_so_far: list[int] = []
    shown = 0
    for token in tokens:
        tokens_so_far.append(token)
        text = tokenizer.decode(tokens_so_far)
        if not text.endswith("\ufffd") and len(text) > shown:
            yield text[shown:]
            shown = len(text)
    text = tokenizer.decode(tokens_so_far)
    if len(text) > shown:
        yield text[shown:]


class Chat:
    """A model, its prompt style and sampling settings; answers messages as streams of text."""

    def __init__(
        self, model: GPT, style: PromptStyle, sampling: Sampling, prepack_weights: bool = True
    ) -> None:
        self.model = model
        self.style = style
        self.sampling = sampling
        # On the CPU, decode through weights reordered for oneDNN (`lit_sft.prepack`), once for
        # a whole session.
        self.prepack_weights = prepack_weights
        self.tokenizer = Tokenizer()
        device = next(model.parameters()).device
        self.generator = torch.Generator(device=device).manual_seed(sampling.seed)

    def answer(self, instruction: str, input_text: str = "") -> Iterator[str]:
        """The answer to one message, as text pieces while they are generated."""
        entry = {"instruction": instruction, "input": input_text, "output": ""}
        prompt = self.tokenizer.encode(self.style.prompt(entry))
        tokens = stream(
            self.model,
            prompt,
            max_new_tokens=self.sampling.max_new_tokens,
            temperature=self.sampling.temperature,
            top_k=self.sampling.top_k,
            generator=self.generator,
            prepack_weights=self.prepack_weights,
        )
        return text_pieces(tokens, self.tokenizer)

    def reply(self, instruction: str, input_text: str, out: TextIO) -> None:
        """Writes the answer to `out` as it is generated; Ctrl-C stops it, not the caller."""
        try:
            for piece in self.answer(instruction, input_text):
                out.write(piece)
                out.flush()
        except KeyboardInterrupt:
            out.write(" [stopped]")
        out.write("\n")
        out.flush()

    def session(self, lines: TextIO, out: TextIO) -> None:
        """Answers every line of `lines` until end of input (Ctrl-D) or /quit."""
        out.write(BANNER)
        with prepacked_linears(self.model, max_rows=1, enabled=self.prepack_weights):
            self._converse(lines, out)

    def _converse(self, lines: TextIO, out: TextIO) -> None:
        while True:
            out.write(PROMPT)
            out.flush()
            try:
                line = lines.readline()
            except KeyboardInterrupt:  # at the prompt: a fresh prompt, as a shell does
                out.write("\n")
                continue
            if not line or line.strip() == QUIT:
                out.write("\n" if not line else "")
                return
            instruction, input_text = split_message(line)
            if instruction:
                self.reply(instruction, input_text, out)
