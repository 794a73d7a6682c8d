"""The live analyzer's stop request, set from a signal handler while the main thread waits."""

from __future__ import annotations

import signal
import time

from analyzer.live.stop_flag import StopFlag


def test_a_signal_handler_ends_the_wait():
    flag = StopFlag()
    previous = signal.signal(signal.SIGALRM, lambda *_: flag.set())
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        started = time.monotonic()
        assert flag.wait(30) is True
        assert time.monotonic() - started < 10  # the signal ended it, not the timeout
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert flag.is_set() and flag.wait(0) is True


def test_wait_times_out_unset():
    flag = StopFlag()
    assert flag.wait(0.01) is False and not flag.is_set()
