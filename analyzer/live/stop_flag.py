"""A stop request that a signal handler may set.

`threading.Event.set()` takes the event's lock: called from a signal handler that interrupted the main
thread while it held that lock (inside `Event.wait`), it waits for itself forever. Seen once in CI: a
live analyzer that never stopped after SIGTERM. Setting a plain attribute takes no lock, and `wait`
sleeps in short slices (a signal cuts a sleep short; the handler runs, then the slice ends)."""

from __future__ import annotations

import time

SLICE_SECONDS = 0.05  # how late a wait may notice the request


class StopFlag:
    def __init__(self) -> None:
        self._set = False

    def set(self) -> None:
        self._set = True

    def is_set(self) -> bool:
        return self._set

    def wait(self, timeout: float) -> bool:
        """Sleep until the flag is set or `timeout` seconds passed; whether it is set."""
        deadline = time.monotonic() + timeout
        while not self._set:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            time.sleep(min(left, SLICE_SECONDS))
        return self._set
