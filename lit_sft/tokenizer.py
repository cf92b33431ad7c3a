"""GPT-2's tokenizer (tiktoken's `gpt2` encoding) and the token ids lit_sft relies on."""

from __future__ import annotations

from collections.abc import Sequence

import tiktoken

END_OF_TEXT = 50256  # <|endoftext|>: GPT-2's only special token, its end and its padding
IGNORE_INDEX = -100  # a target no loss counts (cross-entropy's default ignore_index)
_SPECIAL = frozenset({"<|endoftext|>"})


class Tokenizer:
    """Text to GPT-2 token ids and back; `<|endoftext|>` in text is the special token."""

    eos_id = END_OF_TEXT

    def __init__(self) -> None:
        self.encoding = tiktoken.get_encoding("gpt2")

    def encode(self, text: str) -> list[int]:
        return self.encoding.encode(text, allowed_special=_SPECIAL)

    def encode_batch(self, texts: Sequence[str], num_threads: int = 8) -> list[list[int]]:
        """`encode` of each text, in tiktoken's worker threads."""
        return self.encoding.encode_batch(
            list(texts), num_threads=num_threads, allowed_special=_SPECIAL
        )

    def decode(self, ids: Sequence[int]) -> str:
        return self.encoding.decode(list(ids))
