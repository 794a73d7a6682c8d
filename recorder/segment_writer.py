"""Write batches of rows into zstd Parquet segments, rotating by size and age.

A segment is written under a hidden `.name.parquet.inprogress` name and renamed to `name.parquet`
only after its footer is written and fsynced, so a reader globbing `*.parquet` never sees a
half-written file. Files are created 0600: they hold plaintext, secrets included.
"""

from __future__ import annotations

import json
import logging
import os
import time
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from . import segment_format as sf

log = logging.getLogger("oisp.record")


class SegmentWriter:
    def __init__(
        self,
        directory: Path,
        node: str,
        run_id: str,
        libraries: dict[int, str],
        max_bytes: int,
        max_seconds: float,
    ):
        self.directory = directory
        self.node = node
        self.run_id = run_id
        self.libraries = libraries
        self.max_bytes = max_bytes
        self.max_seconds = max_seconds
        self.seq = 0
        self.segments_written = 0
        self.rows_written = 0
        self._writer: pq.ParquetWriter | None = None
        self._file = None
        self._tmp: Path | None = None
        self._final: Path | None = None
        self._opened_at = 0.0
        self.stats_provider = lambda: {}

    def _metadata(self) -> dict[bytes, bytes]:
        return {
            sf.META_VERSION: sf.FORMAT_VERSION.encode(),
            sf.META_NODE: self.node.encode(),
            sf.META_RUN: self.run_id.encode(),
            sf.META_LIBRARIES: json.dumps({str(k): v for k, v in self.libraries.items()}).encode(),
        }

    def _open(self) -> None:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        name = f"{self.node}-{stamp}-{self.run_id}-{self.seq:06d}"
        self.seq += 1
        self._final = self.directory / f"{name}{sf.SEGMENT_SUFFIX}"
        self._tmp = self.directory / f"{sf.IN_PROGRESS_PREFIX}{name}{sf.IN_PROGRESS_SUFFIX}"
        fd = os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self._file = os.fdopen(fd, "wb")
        schema = sf.SCHEMA.with_metadata(self._metadata())
        self._writer = pq.ParquetWriter(
            self._file,
            schema,
            compression="zstd",
            compression_level=1,
            use_dictionary=sf.DICTIONARY_COLUMNS,
            write_statistics=["kind", "ts_wall", "ts_mono_ns", "pid", "conn_id", "stream_offset"],
        )
        self._opened_at = time.monotonic()

    def write(self, table: pa.Table) -> None:
        """Append one batch as a row group, then rotate if the segment is full or old."""
        if table.num_rows == 0:
            return
        if self._writer is None:
            self._open()
        self._writer.write_table(table)
        self.rows_written += table.num_rows
        self.maybe_rotate()

    def maybe_rotate(self) -> None:
        if self._writer is None:
            return
        if self._file.tell() >= self.max_bytes or time.monotonic() - self._opened_at >= self.max_seconds:
            self.close()

    def close(self) -> Path | None:
        """Finish the open segment (footer, fsync, rename); returns its final path."""
        if self._writer is None:
            return None
        self._writer.add_key_value_metadata({sf.META_STATS.decode(): json.dumps(self.stats_provider())})
        self._writer.close()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.rename(self._tmp, self._final)
        dir_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        final = self._final
        self._writer = self._file = self._tmp = self._final = None
        self.segments_written += 1
        log.debug("segment complete: %s", final)
        return final
