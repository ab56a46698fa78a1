"""Keep the head's large gradient buffers in the process heap instead of fresh mappings.

glibc serves allocations above its mmap threshold (at most 32 MB) with a fresh ``mmap`` and
returns them with ``munmap``. The stacked first layer of a 15-member ensemble has a 39 MB
gradient, so every training step mapped, page-faulted and unmapped it again: measured here, that
doubled the backward matmuls (2.0 -> 1.0 ms per call) and added ~3 ms per step to ``zero_grad``
(``make bench``). ``mallopt(M_MMAP_MAX, 0)`` makes glibc take every block from the heap and
``M_TRIM_THRESHOLD`` keeps freed blocks for reuse. Elsewhere (macOS, musl, Windows) this does
nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

log = logging.getLogger(__name__)
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4


def reuse_freed_memory(trim_threshold: int = 1 << 34) -> bool:
    """Ask glibc to reuse freed memory rather than map and unmap large blocks; True if done."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        done = bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(
            libc.mallopt(M_TRIM_THRESHOLD, ctypes.c_int(min(trim_threshold, 2**31 - 1))))
    except (OSError, AttributeError):
        return False
    log.debug("glibc: large blocks from the heap, freed memory kept for reuse: %s", done)
    return done
