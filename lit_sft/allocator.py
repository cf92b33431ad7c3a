"""Keep the memory of freed tensors in the process, so the next step reuses it.

glibc's malloc gives every block over 32 MB its own fresh pages from the kernel and returns them
when the block is freed. A CPU training step allocates several such blocks and frees them again
(the logits and their gradients, the token table's and output head's gradients: about 0.6 GB a
step for gpt2-small), so every step faults in and zeroes those pages anew. Served from malloc's
heap instead, they reuse the memory earlier steps freed: `train.py` on gpt2-small ran 60 steps
of the book's data 1.10-1.19x faster for 3-6 % more peak memory (`benchmarks/RESULTS.md`).
PyTorch's tuning guide fixes the same cost by preloading jemalloc or tcmalloc; this needs no
library.
"""

from __future__ import annotations

import ctypes
import ctypes.util

# mallopt(3)'s parameters, from glibc's malloc.h.
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
# Free memory at the heap's top is returned to the kernel past this (the largest value mallopt
# takes, a C int); glibc's default, 128 kB, would return a freed block at the top at once.
TRIM_THRESHOLD = 2**31 - 1


def keep_freed_memory() -> bool:
    """Makes glibc's malloc serve big blocks from its heap and keep what is freed there for reuse;
    returns whether it could (False where the C library is not glibc: macOS, musl, Windows)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
