"""Dask worker plugins that kill their own worker process when it starts a fleet analysis task: a worker
dying mid-run, for real (SIGKILL, as the OOM killer does it). Imported by the workers (spawned with the
test's sys.path)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from distributed import WorkerPlugin


def _analysis_starts(key, finish: str) -> bool:
    name = key if isinstance(key, str) else str(key)
    return finish == "executing" and name.startswith("analyze-")


class KillOnce(WorkerPlugin):
    """The first worker to start an analysis task while `marker` exists takes it (an atomic rename to
    `marker`.claimed, holding its pid) and dies."""

    name = "kill-once"

    def __init__(self, marker: str):
        self.marker = marker

    def transition(self, key, start, finish, **kwargs) -> None:
        if not _analysis_starts(key, finish):
            return
        claimed = Path(self.marker + ".claimed")
        try:
            os.rename(self.marker, claimed)
        except FileNotFoundError:
            return  # another worker took it, or no kill was asked for
        claimed.write_text(f"{os.getpid()} {key}\n")
        os.kill(os.getpid(), signal.SIGKILL)


class KillAlways(WorkerPlugin):
    """Every worker dies as it starts an analysis task."""

    name = "kill-always"

    def transition(self, key, start, finish, **kwargs) -> None:
        if _analysis_starts(key, finish):
            os.kill(os.getpid(), signal.SIGKILL)
