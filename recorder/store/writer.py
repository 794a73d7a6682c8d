"""Write batches of rows into segments, rotating by size and age, within a disk quota.

A segment is first an in-progress Arrow IPC stream (`.NAME.arrows.inprogress`, see
segment_inprogress.py) that every batch is written through to, so a kill -9 loses only the batches
not yet handed to `write`. At rotation it is converted to `NAME.parquet` in the background
(store/publisher.py). Files are created 0600: they hold plaintext, secrets included.

A failed write (disk full, quota exceeded, I/O error) never escapes: the batch is dropped and
counted, the in-progress stream is cut back to its last complete batch and published as it is. Until
the streams a full disk stopped are published, new batches are dropped too. With a quota, a full
disk first deletes the oldest segments to make room, and the batch is tried again.
"""

from __future__ import annotations

import errno
import json
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa

from contract import segment_format as sf
from contract import segment_names as names
from recorder.store.inprogress import InProgressSegment
from recorder.store.publisher import Publisher

log = logging.getLogger("oisp.record")

# A failing disk is reported at once, then at most this often while it keeps failing.
FAILURE_LOG_INTERVAL_SECONDS = 30.0


class SegmentWriter:
    def __init__(
        self,
        directory: Path,
        node: str,
        run_id: str,
        libraries: dict[int, str],
        max_bytes: int,
        max_seconds: float,
        max_total_bytes: int = 0,
    ):
        self.directory = directory
        self.node = node
        self.run_id = run_id
        self.max_bytes = max_bytes  # of the in-progress stream; its Parquet segment is about as large
        self.max_seconds = max_seconds
        self.max_total_bytes = max_total_bytes  # 0: no quota
        self.seq = 0
        self.segments_written = 0  # closed by this writer (published in the background, see counters)
        self.rows_written = 0
        self.write_failed_batches = 0
        self.write_failed_rows = 0
        self.write_failed_bytes = 0
        self.stats_provider = lambda: {}
        # the stream's schema carries the footer metadata to the conversion, and to salvage
        self._schema = sf.SCHEMA.with_metadata({
            sf.META_VERSION: sf.FORMAT_VERSION.encode(),
            sf.META_NODE: node.encode(),
            sf.META_RUN: run_id.encode(),
            sf.META_LIBRARIES: json.dumps({str(k): v for k, v in libraries.items()}).encode(),
        })
        self._publisher = Publisher(directory, max_total_bytes)
        self._current: InProgressSegment | None = None
        self._current_name = ""
        self._opened_at = 0.0
        self._outage = _Outage()

    def counters(self) -> dict[str, int]:
        return {
            "segments_written": self.segments_written,
            "segments_published": self._publisher.segments_published,
            "rows_written": self.rows_written,
            "write_failed_batches": self.write_failed_batches,
            "write_failed_rows": self.write_failed_rows,
            "write_failed_bytes": self.write_failed_bytes,
            "quota_deleted_segments": self._publisher.quota_deleted_segments,
            "quota_deleted_bytes": self._publisher.quota_deleted_bytes,
        }

    def write(self, table: pa.Table) -> None:
        """Append one batch to the in-progress segment, then rotate if it is full or old."""
        if table.num_rows == 0:
            return
        error = self._try_append(table)
        if error and self.max_total_bytes and self._publisher.make_room(table.nbytes):
            error = self._try_append(table)  # once more, now that old segments made room
        if error:
            self._outage.failed(table, error)
            self.write_failed_batches += 1
            self.write_failed_rows += table.num_rows
            self.write_failed_bytes += table.nbytes
            return
        self.rows_written += table.num_rows
        self._outage.succeeded()
        self.maybe_rotate()

    def maybe_rotate(self) -> None:
        if self._current is None:
            return
        if self._current.size >= self.max_bytes or time.monotonic() - self._opened_at >= self.max_seconds:
            self._rotate()

    def close(self) -> Path | None:
        """Publish the open segment and wait for every conversion; returns the open segment's final
        path (None when none was open, or when it could not be published: the disk is full)."""
        name = self._rotate() if self._current is not None else None
        self._publisher.wait()
        if name is None or self._publisher.is_waiting(name):
            return None
        return names.final_path(self.directory, name)

    def _rotate(self) -> str:
        self._current.close()
        name, path = self._current_name, self._current.path
        self._current = None
        self.segments_written += 1
        self._publisher.submit(name, path, {**self.stats_provider(), **self.counters()})
        return name

    def _try_append(self, table: pa.Table) -> OSError | None:
        if self._publisher.stalled():
            # older segments are published first: new batches would take the space they need
            self._publisher.retry()
            return OSError(errno.ENOSPC, "closed segments are waiting for disk space to be published")
        try:
            if self._current is None:
                stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
                name = names.segment_name(self.node, stamp, self.run_id, self.seq)
                self.seq += 1
                self._current = InProgressSegment(names.in_progress_path(self.directory, name), self._schema)
                self._current_name = name
                self._opened_at = time.monotonic()
            self._current.append(table)
        except OSError as exc:
            if self._current is not None:  # cut back to its last complete batch, and closed
                if self._current.batches:
                    self._rotate()
                else:
                    self._current.path.unlink(missing_ok=True)
                    self._current = None
            return exc
        return None


@dataclass
class _Outage:
    """Reports failing writes at most once every FAILURE_LOG_INTERVAL_SECONDS (a full disk fails a
    batch every flush, and may come and go as files are deleted and conversions give up), and the
    first success after each report."""

    reported: bool = False  # an error was logged and no success since
    last_report: float = -FAILURE_LOG_INTERVAL_SECONDS
    batches: int = 0  # dropped since the last line logged
    rows: int = 0

    def failed(self, table: pa.Table, exc: OSError) -> None:
        self.batches += 1
        self.rows += table.num_rows
        now = time.monotonic()
        if now - self.last_report >= FAILURE_LOG_INTERVAL_SECONDS:
            log.error("cannot write segments (%s): dropping batches until writing works again "
                      "(%d batches, %d rows, since the last report; all counted in write_failed_*)",
                      exc, self.batches, self.rows)
            self.reported, self.last_report = True, now
            self.batches = self.rows = 0

    def succeeded(self) -> None:
        if self.reported:
            log.warning("writing segments again (%d batches, %d rows, dropped since the last report)",
                        self.batches, self.rows)
            self.reported = False
            self.batches = self.rows = 0
