"""GPT-2's tokenizer (tiktoken's `gpt2` encoding) and the token ids lit_sft relies on."""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

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

    def encode_batch(self, texts: Sequence[str], num_threads: int | None = None) -> list[list[int]]:
        """`encode` of each text, in one thread per usable core (`num_threads`), order kept."""
        if num_threads is None:
            num_threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 4
        # One contiguous chunk per thread (tiktoken's encoder releases the GIL): tiktoken's own
        # encode_batch submits one task per text, which measured 1.4-2x slower than a plain loop
        # on 2 busy cores.
        size = max(1, -(-len(texts) // max(1, num_threads)))
        chunks = [texts[i : i + size] for i in range(0, len(texts), size)]
        if len(chunks) <= 1:
            return [self.encode(text) for text in texts]
        with ThreadPoolExecutor(len(chunks)) as pool:
            parts = pool.map(lambda chunk: [self.encode(text) for text in chunk], chunks)
        return [tokens for part in parts for tokens in part]

    def decode(self, ids: Sequence[int]) -> str:
        return self.encoding.decode(list(ids))
