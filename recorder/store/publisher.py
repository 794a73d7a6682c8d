"""Publish closed in-progress streams as Parquet segments, in the background, within a quota.

Converting a 64 MiB stream to Parquet (decompress, encode, compress again) took 2.3 to 3.7 s here
for JSON-like text (300 MiB of plaintext), 0.3 to 0.5 s for incompressible bytes: done on the
writer's thread, that would stall the next batches, and a kill -9 meanwhile would lose them. So
conversions run on one thread of their own; the writer waits only when it is two conversions
ahead. A stream that cannot be converted now (disk full) stays on disk and waits; it is tried
again at most every RETRY_SECONDS, at once when room was made, and at close. Meanwhile the writer
drops new batches: what was captured first is published first.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from recorder.store.conversion import Published, UnreadableStream, publish
from recorder.store.quota import enforce_quota, make_room

log = logging.getLogger("oisp.record")

# Conversions queued or running before `submit` waits: the writer's backpressure.
MAX_JOBS_IN_FLIGHT = 2
# A conversion the disk stopped is not tried again sooner (each try writes until the disk is full).
RETRY_SECONDS = 5.0


@dataclass
class _Waiting:
    stream: Path
    stats: dict  # the footer's stats, as they were when the writer closed the stream
    failures: int = 0
    retry_at: float = 0.0


class Publisher:
    def __init__(self, directory: Path, max_total_bytes: int):
        self.directory = directory
        self.max_total_bytes = max_total_bytes  # 0: no quota
        self.segments_published = 0
        self.quota_deleted_segments = 0
        self.quota_deleted_bytes = 0
        self._lock = threading.Lock()
        self._waiting: dict[str, _Waiting] = {}  # by segment name
        self._executor: ThreadPoolExecutor | None = None
        self._jobs: list[Future] = []

    def submit(self, name: str, stream: Path, stats: dict) -> None:
        """Publish the closed stream as NAME.parquet, with these footer stats, in the background."""
        with self._lock:
            self._waiting[name] = _Waiting(stream, stats)
        self._kick(force=False)

    def wait(self) -> None:
        """Try every waiting stream once more and wait for the conversions (at close); the
        background thread ends."""
        try:
            if self._waiting:
                self._kick(force=True)
            for job in self._jobs:
                job.result()
        finally:
            self._jobs = []
            if self._executor is not None:
                self._executor.shutdown()
                self._executor = None

    def is_waiting(self, name: str) -> bool:
        with self._lock:
            return name in self._waiting

    def stalled(self) -> bool:
        """True while a stream waits because its conversion failed (the disk is full)."""
        with self._lock:
            return any(w.failures for w in self._waiting.values())

    def retry(self) -> None:
        """Try the stalled streams again in the background, if it is time and none is running."""
        if not any(not j.done() for j in self._jobs):
            self._kick(force=False)

    def make_room(self, needed: int) -> bool:
        """The disk is full: delete the oldest segments, enough for `needed` bytes and the streams
        waiting for conversion, and convert those now. True when anything was deleted."""
        deleted = self._make_room(needed)
        if deleted:
            self._kick(force=True)
            for job in self._jobs:
                job.result()
        return deleted

    def _make_room(self, needed: int) -> bool:
        with self._lock:
            streams = [w.stream for w in self._waiting.values()]
        waiting = sum(p.stat().st_size for p in streams if p.exists())
        deleted = make_room(self.directory, needed + waiting)
        self._count_deleted(deleted)
        return bool(deleted)

    def _kick(self, force: bool) -> None:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="segment-publish")
        for job in [j for j in self._jobs if j.done()]:
            job.result()  # a bug in a conversion surfaces in the writer's thread
        self._jobs = [j for j in self._jobs if not j.done()]
        while len(self._jobs) >= MAX_JOBS_IN_FLIGHT:
            self._jobs.pop(0).result()
        self._jobs.append(self._executor.submit(self._publish_waiting, force))

    def _publish_waiting(self, force: bool) -> None:
        with self._lock:
            waiting = sorted(self._waiting.items())
        for name, w in waiting:
            if not force and time.monotonic() < w.retry_at:
                continue
            done = self._publish_one(name, w)
            if done is None:
                continue
            with self._lock:
                del self._waiting[name]
            if done.truncated:
                log.error("segment %s: the last batch of its stream could not be read back (%s)",
                          name, done.truncated)
            if done.path is not None:
                self.segments_published += 1
                log.debug("segment complete: %s", done.path)
            if self.max_total_bytes:
                self._count_deleted(enforce_quota(self.directory, self.max_total_bytes))

    def _publish_one(self, name: str, w: _Waiting) -> Published | None:
        """None when it cannot be done now (disk full): the stream keeps waiting."""
        for attempt in range(2):
            try:
                return publish(w.stream, name, w.stats)
            except UnreadableStream as exc:  # our own file: only a failing disk does this
                log.error("cannot read back in-progress segment %s (%s): left in place", w.stream.name, exc)
                return Published(None, 0, 0, str(exc))
            except OSError as exc:
                error = exc
                # with a quota, old segments make room for new ones; then try once more
                if attempt or not (self.max_total_bytes and self._make_room(w.stream.stat().st_size)):
                    break
        w.failures += 1
        w.retry_at = time.monotonic() + RETRY_SECONDS
        log.log(logging.WARNING if w.failures == 1 else logging.DEBUG,
                "cannot publish segment %s yet (%s): its stream %s waits for a later try",
                name, error, w.stream.name)
        return None

    def _count_deleted(self, deleted: list[tuple[Path, int]]) -> None:
        with self._lock:
            self.quota_deleted_segments += len(deleted)
            self.quota_deleted_bytes += sum(size for _, size in deleted)
