"""Freed memory kept for reuse, in a process that analyzes a run of segments and exits.

The analyzer copies every captured chunk out of its batch (analyzer/segments/columns.py) and builds each
message's body from them; all of it is freed once its exchange is written. glibc's malloc hands the top of
its heap back to the system when more than a little is free there (its trim threshold follows its mmap
threshold: 256 KiB at first), and gives blocks over the mmap threshold pages of their own: either way the
next bodies were built in fresh pages, each faulted in anew. Over the large-bodies corpus of
bench/analyzer_throughput.py (0.4 GB) that was 120,000 page faults, and a whole run took 2.2-2.7 s; with
blocks up to MMAP_THRESHOLD taken from the heap and up to TRIM_THRESHOLD of free heap kept, 38,000 faults
and 2.0-2.1 s, at the same peak memory (what is in use at once sets it; freed pages are used again).
"""

from __future__ import annotations

import ctypes

# mallopt's parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 4 << 20  # larger blocks (a body of many MiB) still get pages of their own
TRIM_THRESHOLD = 128 << 20


def keep_freed_memory() -> bool:
    """Set glibc's malloc to keep freed memory for reuse (module docstring); False where the C library
    has no mallopt (not glibc): nothing is changed there."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
