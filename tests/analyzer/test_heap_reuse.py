"""Freed memory kept for reuse in a batch run (analyzer/heap_reuse.py): set in a process of its own, the
same rounds of allocating and freeing bodies fault in far fewer fresh pages."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import resource, sys
from analyzer.heap_reuse import keep_freed_memory
if sys.argv[1] == "kept":
    assert keep_freed_memory()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):  # bodies of a batch built from captured chunks, then freed with their exchanges
    chunks = [bytes(8192) for _ in range(2000)]
    bodies = [bytearray(b"".join(chunks[i:i + 200])) for i in range(0, 2000, 200)]
    del chunks, bodies
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, check=True)
    return int(out.stdout)


def test_freed_memory_is_used_again():
    default, kept = faults("default"), faults("kept")
    # 20 rounds of 32 MiB touched: 160,000 fresh pages if none were used again
    assert default > 50_000 and kept < default / 4, (default, kept)
