"""The collector's pace for a batch run (analyzer/collector_pace.py): set once, in a process of its own."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import gc
from analyzer.collector_pace import pace_for_batch
assert gc.get_freeze_count() == 0
pace_for_batch()
frozen = gc.get_freeze_count()
assert frozen > 1000 and gc.get_threshold() == (100_000, 10, 10), (frozen, gc.get_threshold())
junk = [[i] for i in range(100)]
pace_for_batch()  # a second call freezes nothing more
assert gc.get_freeze_count() == frozen
a = []; a.append(a); del a  # a cycle made after the freeze is still collected
assert gc.collect() >= 1
print("ok")
"""


def test_pace_is_set_once_and_cycles_are_still_collected():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ok"
