"""Turn an in-progress IPC stream into a published zstd Parquet segment.

The Parquet file is written under a hidden `.NAME.parquet.converting` name (created anew, 0600,
never through a link: see owned.py), fsynced, renamed to `NAME.parquet` (then the directory is
fsynced), and only then is the stream removed: a crash at any step leaves either the stream
(salvaged at the next start) or the finished segment. The stream is read through the descriptor
that was checked to be the recorder's own regular file (by /proc/self/fd: the recorder is Linux's).
Conversion streams batch by batch, so memory holds one row group (ROW_GROUP_BYTES), not the segment.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from contract import segment_format as sf
from contract import segment_names as names
from recorder.store.owned import create, not_ours

PARQUET_OPTIONS = dict(
    compression="zstd",
    compression_level=1,
    use_dictionary=sf.DICTIONARY_COLUMNS,
    write_statistics=["kind", "ts_wall", "ts_mono_ns", "pid", "conn_id", "stream_offset"],
)


# Consecutive batches share a row group up to this much Arrow data (a bigger batch is one row group
# alone): what a reader holds in memory per row group, without many tiny row groups when batches
# are small or arrive in several chunks.
ROW_GROUP_BYTES = 16 * 1024 * 1024


class UnreadableStream(Exception):
    """Not even the schema of the stream can be read."""


class StreamBusy(Exception):
    """Another process holds the stream (a live recorder writing or converting it)."""


@dataclass
class StreamReader:
    """The complete batches of an in-progress stream. `truncated` holds the reader's error when the
    stream ends inside a batch (a kill cut it short), once iteration is over."""

    path: Path
    truncated: str | None = None
    rows: int = 0
    batches: int = 0

    def __post_init__(self) -> None:
        # held until close: a second recorder's salvage never converts the same stream
        self._lock_fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            reason = not_ours(os.fstat(self._lock_fd))
            if reason:  # swapped since it was looked at: read nothing of it
                raise UnreadableStream(f"not the recorder's file: {reason}")
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise StreamBusy(str(self.path)) from None
        except BaseException:
            os.close(self._lock_fd)
            raise
        # the very file just checked and locked, whatever its name leads to by now
        self._file = pa.OSFile(f"/proc/self/fd/{self._lock_fd}")
        try:
            self._reader = ipc.open_stream(self._file)
        except (pa.ArrowInvalid, OSError) as exc:
            self.close()
            raise UnreadableStream(str(exc)) from None

    @property
    def schema(self) -> pa.Schema:
        return self._reader.schema

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        while True:
            try:
                batch = self._reader.read_next_batch()
            except StopIteration:
                return
            except (pa.ArrowInvalid, OSError) as exc:  # pyarrow reports a short body as OSError
                self.truncated = str(exc)
                return
            self.rows += batch.num_rows
            self.batches += 1
            yield batch

    def close(self) -> None:
        self._file.close()
        os.close(self._lock_fd)


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class Published:
    path: Path | None  # None when the stream held no complete batch (nothing was published)
    rows: int
    batches: int
    truncated: str | None  # the reader's error when the stream ended inside a batch


def publish(ipc_path: Path, name: str, stats: dict, salvage: bool = False) -> Published:
    """Write the complete batches of the stream at `ipc_path` as the segment NAME.parquet next to
    it, then remove the stream. With `salvage`, the footer's stats also say what was recovered.
    Raises StreamBusy, UnreadableStream, or OSError (the partial Parquet file is removed, the
    stream kept)."""
    directory = ipc_path.parent
    tmp = names.converting_path(directory, name)
    final = names.final_path(directory, name)
    stream = StreamReader(ipc_path)
    try:
        fd = create(tmp)  # raises, touching nothing, when something not ours is in the way
        try:
            _write_parquet(stream, fd, stats, salvage)
            if stream.batches:
                os.rename(tmp, final)
            else:
                tmp.unlink()
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    finally:
        stream.close()
    if stream.batches:
        fsync_dir(directory)
    ipc_path.unlink()
    return Published(final if stream.batches else None, stream.rows, stream.batches, stream.truncated)


def _write_parquet(stream: StreamReader, fd: int, stats: dict, salvage: bool) -> None:
    with os.fdopen(fd, "wb") as f:
        # the stream's schema carries the footer metadata (version, node, run, libraries)
        with pq.ParquetWriter(f, stream.schema, **PARQUET_OPTIONS) as writer:
            group: list[pa.RecordBatch] = []
            group_bytes = 0
            for batch in stream:
                if group and group_bytes + batch.nbytes > ROW_GROUP_BYTES:
                    writer.write_table(pa.Table.from_batches(group))
                    group, group_bytes = [], 0
                group.append(batch)
                group_bytes += batch.nbytes
            if group:
                writer.write_table(pa.Table.from_batches(group))
            if salvage:
                stats = {**stats, "salvaged": True, "salvaged_rows": stream.rows,
                         "truncated_tail": stream.truncated is not None}
            writer.add_key_value_metadata({sf.META_STATS.decode(): json.dumps(stats)})
        f.flush()
        os.fsync(f.fileno())
