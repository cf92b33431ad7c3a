"""GPT-2's tokenizer (tiktoken's `gpt2` encoding) and the token ids lit_sft relies on."""

from __future__ import annotations

from collections.abc import Sequence

import tiktoken
from tiktoken.load import read_file_cached

END_OF_TEXT = 50256  # <|endoftext|>: GPT-2's only special token, its end and its padding
IGNORE_INDEX = -100  # a target no loss counts (cross-entropy's default ignore_index)
_SPECIAL = frozenset({"<|endoftext|>"})
# OpenAI's GPT-2 vocabulary and merges, from which tiktoken builds its `gpt2` encoding (and which
# it caches in $TIKTOKEN_CACHE_DIR under the sha1 of the URL): byte for byte the vocab.json and
# merges.txt of Hugging Face's GPT-2 tokenizer.
_GPT2_FILES = "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/"
_GPT2_SHA256 = {
    "encoder.json": "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
    "vocab.bpe": "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
}


def gpt2_bpe_files() -> tuple[bytes, bytes]:
    """GPT-2's encoder.json (token -> id) and vocab.bpe (merges), from tiktoken's cache."""
    encoder, merges = (
        read_file_cached(_GPT2_FILES + name, sha256) for name, sha256 in _GPT2_SHA256.items()
    )
    return encoder, merges


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
