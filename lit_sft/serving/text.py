"""The text of a growing answer, released piece by piece, and cut at the first stop string."""

from __future__ import annotations

from collections.abc import Sequence

from lit_sft.tokenizer import Tokenizer


class TextStream:
    """Decodes an answer's tokens as they come and releases the text that is final.

    Text is held back while it ends in an incomplete character (a character can span tokens) or
    in what could be the start of a stop string; once a stop string appears, the answer ends
    before it (`stopped`), as OpenAI's servers do.
    """

    def __init__(self, tokenizer: Tokenizer, stop: Sequence[str] = ()) -> None:
        self.tokenizer = tokenizer
        self.stop = tuple(s for s in stop if s)
        self.tokens: list[int] = []
        self.shown = 0  # characters released so far
        self.stopped = False

    def push(self, token: int) -> str:
        """Adds a token; returns the text it releases ('' while held back)."""
        self.tokens.append(token)
        text = self.tokenizer.decode(self.tokens)
        cut = min((i for s in self.stop if (i := text.find(s)) >= 0), default=None)
        if cut is not None:
            self.stopped = True
            return self._release(text, cut)
        if text.endswith("\ufffd"):
            return ""
        return self._release(text, len(text) - self._held(text))

    def finish(self) -> str:
        """The text still held back, once the answer has ended without a stop string."""
        return self._release(self.tokenizer.decode(self.tokens), None)

    def _held(self, text: str) -> int:
        """Length of the longest end of `text` that begins a stop string."""
        ends = (
            n
            for s in self.stop
            for n in range(min(len(s) - 1, len(text)), 0, -1)
            if s.startswith(text[-n:])
        )
        return max(ends, default=0)

    def _release(self, text: str, end: int | None) -> str:
        end = len(text) if end is None else end
        piece = text[self.shown : end] if end > self.shown else ""
        self.shown = max(self.shown, end)
        return piece
