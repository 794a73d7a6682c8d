"""Live events within a poll of the recorder's flush, not a segment's age: the real recorder and the live
analyzer with the DaemonSet's settings (10 s segments), a client calling at a steady pace
(testbed/live_latency.py). Every call's event is written once, and all of them before the recorder
published any segment: the analyzer read the segment being written. The latencies are printed; the
benchmark (bench/live_latency.py, docs/performance.md) measures them under load."""

from __future__ import annotations

import pytest

from testbed import live_latency


@pytest.mark.ebpf
def test_events_come_from_the_segment_being_written(tmp_path):
    run = live_latency.run(tmp_path, calls=60, per_second=20)
    print(f"\nlive latency over {run.calls} calls: p50 {run.percentile(50):.0f} ms, "
          f"p95 {run.percentile(95):.0f} ms, max {max(run.latencies_ms):.0f} ms")
    assert run.calls == 60
    assert run.missing == [] and run.duplicated == [], run.analyzer_log[-3000:]
    # three seconds of calls and a 10 s segment age: every event came before any segment was published
    assert run.published_before_last_event == 0, run.recorder_log[-2000:]


@pytest.mark.ebpf
def test_sigkills_of_either_program_write_every_event_once(tmp_path):
    """The analyzer SIGKILLed three times at random moments (restarted at once: it reads the segment
    being written from its start again), the recorder once (restarted: it publishes what the killed one
    was writing, and the analyzer skips the rows it had read of it); each on a timer of its own, so an
    analyzer may die while the recorder starts again. Three keep-alive connections. Every call made
    while a recorder ran has its event exactly once."""
    run = live_latency.run(tmp_path, calls=360, per_second=20, analyzer_kills=3, recorder_kill=True, seed=7,
                           connections=3)
    print(f"\nkills: {', '.join(run.kills)}; {len(run.unrecorded)} calls made while no recorder ran; "
          f"latency p50 {run.percentile(50):.0f} ms, p95 {run.percentile(95):.0f} ms")
    assert len(run.kills) == 4
    assert run.duplicated == [], run.analyzer_log[-3000:]
    assert run.missing == [], (run.missing, run.analyzer_log[-3000:])
    assert len(run.seen) >= run.calls - len(run.unrecorded) >= 20  # calls recorded after the restart too
