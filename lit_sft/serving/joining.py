"""Requests joining a batch mid-generation: each prompt cached on the side, then laid in as a row.

The batch's rows share one column per position of the cache. A new prompt of `p` tokens is laid
in so that its last token sits in the column the next step feeds (`rows.end - 1`); its first
`p - 1` tokens are run through the model alone into a cache of their own, whose keys and values
are copied into the batch's cache at their columns. Its earlier columns are padding (not real,
so no query attends them), and positions count from its first token, as if it decoded alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from lit_sft.generation import DecodingRows, positions_of
from lit_sft.model import GPT, KVCache


def can_join(rows: DecodingRows, prompt_length: int, max_tokens: int) -> bool:
    """Whether a prompt fits before the next column and its answer before the last."""
    return prompt_length <= rows.end and rows.end + max_tokens <= rows.ids.shape[1]


def add_rows(model: GPT, rows: DecodingRows, prompts: Sequence[list[int]], first: int) -> None:
    """Adds `prompts` as rows (between two steps), their places in the batch `first`, ...."""
    device, columns, end = rows.ids.device, rows.ids.shape[1], rows.end
    new = len(prompts)
    ids = torch.zeros((new, columns), dtype=torch.long, device=device)
    real = torch.ones((new, columns), dtype=torch.bool, device=device)
    for row, prompt in enumerate(prompts):
        ids[row, end - len(prompt) : end] = torch.tensor(prompt, device=device)
        real[row, : end - len(prompt)] = False
    rows.ids, rows.real = torch.cat([rows.ids, ids]), torch.cat([rows.real, real])
    rows.positions = torch.cat([rows.positions, positions_of(real)])
    rows.done = torch.cat([rows.done, torch.zeros(new, dtype=torch.bool, device=device)])
    rows.index = torch.cat([rows.index, torch.arange(first, first + new, device=device)])
    cache = rows.cache
    assert cache is not None and cache.length == end - 1  # between two steps
    old = cache.keys.shape[1]
    cache.keys, cache.values = (_grown(t, new, cache.length) for t in (cache.keys, cache.values))
    for row, prompt in enumerate(prompts):
        if len(prompt) > 1:
            start = end - len(prompt)
            alone = KVCache(model.config, 1, len(prompt) - 1, dtype=cache.keys.dtype, device=device)
            with torch.inference_mode():
                model.hidden_states(ids[row : row + 1, start : end - 1], cache=alone)
            cache.keys[:, old + row, :, start : end - 1] = alone.keys[:, 0]
            cache.values[:, old + row, :, start : end - 1] = alone.values[:, 0]


def _grown(tensor: Tensor, new: int, filled: int) -> Tensor:
    """`tensor` (L, B, H, T, D) with `new` more rows, of zeros up to `filled` columns.

    Only the filled columns are copied (the cache returns no others), and the new rows' are
    zeros: a padding key must be finite, or its zero attention weight would still give NaN.
    """
    grown = tensor.new_empty((tensor.shape[0], tensor.shape[1] + new, *tensor.shape[2:]))
    grown[:, : tensor.shape[1], :, :filled] = tensor[:, :, :, :filled]
    grown[:, tensor.shape[1] :, :, :filled] = 0
    return grown
