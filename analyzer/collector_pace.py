"""The garbage collector's pace for a process that analyzes a run of segments and exits.

The analyzer allocates millions of short-lived objects (rows, exchanges, events). At CPython's default
pace (a young collection every 700 allocations, a full one over the whole heap of modules, tables and
caches every 70,000) the collector took 0.6 s of a 10 s run over short connections
(bench/analyzer_throughput.py). Freezing what exists once the program has started takes it out of every
later scan, and young collections every 10,000 allocations still find the cycles the parsers leave (h11's
connections refer to themselves) while they are young: peak memory was the same.
"""

from __future__ import annotations

import gc

_paced = False


def pace_for_batch() -> None:
    """Freeze what exists now and collect less often; once per process (what a second call would freeze
    is the garbage of work done since)."""
    global _paced
    if _paced:
        return
    _paced = True
    gc.freeze()  # no collection first: at this point it found 5 objects and took 20 ms
    gc.set_threshold(10_000, 10, 10)
