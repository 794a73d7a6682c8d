"""Whether the node's live analyzer is done with a segment, read from its checkpoint.

The live analyzer (analyzer/live/follow.py) reads each published segment once, and after a restart
reads again, from the first segment of the oldest connection still open at its checkpoint, every
segment it had processed (docs/analyzer.md, "Checkpoint"). A segment deleted before that re-reading
costs the connections that needed it (`connections_lost`). So an uploaded segment is deleted only
once the checkpoint lists it as processed and it sorts before the first segment of every open
connection (`replay_from`): the analyzer will never open it again, whatever happens.

Without a checkpoint (the analyzer has not written one yet, or it is unreadable, or it belongs to
another directory) nothing is deleted: uploaded segments wait, and the recorder's quota still
bounds them. The checkpoint is read with the analyzer's own loader, so the two cannot disagree on
its format.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from analyzer.live import checkpoint
from analyzer.live.checkpoint import CheckpointError

log = logging.getLogger("oisp.ship")


class AnalyzerGate:
    def __init__(self, checkpoint_path: Path | None, segments_dir: Path):
        self.checkpoint_path = checkpoint_path
        self.segments_dir = str(segments_dir.resolve())
        self._said: str | None = None  # the last reason logged for waiting, logged once

    def done_with(self) -> Callable[[str], bool]:
        """A predicate over segment NAMEs (with `.parquet`, as the checkpoint names them), as of now."""
        if self.checkpoint_path is None:
            return lambda name: True
        try:
            cp = checkpoint.load(self.checkpoint_path)
        except CheckpointError as exc:
            return self._waiting(f"the live analyzer's checkpoint {self.checkpoint_path} is unusable ({exc})")
        if cp is None:  # the analyzer has not finished its first segment: no warning
            return self._waiting(f"no checkpoint of the live analyzer yet at {self.checkpoint_path}",
                                 logging.INFO)
        if cp.segments_dir != self.segments_dir:
            return self._waiting(f"the checkpoint {self.checkpoint_path} is for {cp.segments_dir}, not "
                                 f"{self.segments_dir}: check upload.analyzer_checkpoint")
        if self._said is not None:
            log.info("the live analyzer's checkpoint is readable again: uploaded segments it is done with "
                     "are deleted")
            self._said = None
        processed, replay_from = frozenset(cp.processed), cp.replay_from
        return lambda name: name in processed and (replay_from is None or name < replay_from)

    def _waiting(self, reason: str, level: int = logging.WARNING) -> Callable[[str], bool]:
        if reason != self._said:
            log.log(level, "%s: uploaded segments are kept until the analyzer is done with them", reason)
            self._said = reason
        return lambda name: False
