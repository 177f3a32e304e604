"""Process-wide C allocator settings for a node process (glibc only; a no-op elsewhere).

Why: glibc serves a request of at least ``M_MMAP_THRESHOLD`` bytes (128 KiB at start) with its own
``mmap``, which ``free`` hands straight back to the kernel. But the threshold is *dynamic*: every
time such a block is freed, glibc raises the threshold to its size (up to 32 MiB). After the first
evicted 16 MiB value, later values of up to 16 MiB come from the heap instead, and freed heap
blocks stay resident (fragmented between live ones, or above the trim threshold). Measured with
1-16 MiB values under a 64 MiB limit (docs/benchmarks.md, "Memory against the limit"): 168 MiB
resident instead of ~95 MiB. Setting the threshold explicitly turns the dynamic adjustment off, so
every large value is its own mapping and leaves memory when it is evicted.

The cost: one ``mmap`` / ``munmap`` pair per value of 128 KiB or more (microseconds, against the
copy of 128 KiB it comes with) and up to one page of rounding each (3 % at 128 KiB, less above).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

#: glibc's ``mallopt`` parameter numbers (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: Blocks of at least this many bytes get their own mapping, returned to the kernel on free.
#: glibc's initial value, made fixed.
MMAP_THRESHOLD_BYTES = 128 * 1024
#: Free memory at the top of the heap beyond this is returned to the kernel (glibc's default,
#: which the dynamic mmap threshold would otherwise double along with it).
TRIM_THRESHOLD_BYTES = 128 * 1024


def tune_allocator() -> bool:
    """Fix glibc's mmap and trim thresholds for this process; False when not on glibc."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        log.info("allocator: no glibc mallopt here; large values may stay resident once freed")
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(
        mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
        and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
    )
