"""The garbage collector's pace for a process that analyzes a run of segments and exits.

The analyzer allocates millions of short-lived objects (rows, exchanges, events). At CPython's default
pace (a young collection every 700 allocations, a full one over the whole heap of modules, tables and
caches every 70,000) the collector took 0.6 s of a 10 s run over short connections
(bench/analyzer_throughput.py). Freezing what exists once the program has started takes it out of every
later scan, and young collections every 100,000 allocations still find the few cycles left while they are
young: h11's connections refer to themselves, but the common HTTP/1 exchange no longer makes any
(analyzer/http/http1.py), and a parse error's traceback, a cycle through h11's error, is dropped where it
is caught. Over the bench's corpora the collector finds fewer than 1,000 objects in a whole run; at
100,000 it took 0.02 s of short connections where 10,000 took 0.16 s, at the same peak memory on every
corpus.
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
    gc.set_threshold(100_000, 10, 10)
