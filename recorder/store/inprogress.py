"""The segment being written: an Arrow IPC stream that survives a kill -9 at any moment.

Every batch is serialized in memory, then handed to the kernel with write(2) before `append`
returns, so a killed process loses nothing it has appended (the page cache outlives the process; an
fsync would only matter for a kernel crash, and it is paid once, at publication). A stream needs
no footer: a reader takes every complete batch and stops at the end of the file, or at a batch the
kill cut short. If a write fails (disk full), the file is cut back to the last complete batch.

The file is flock()ed while open (and while converted), so salvage never takes the live file of
another recorder.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.ipc as ipc

from recorder.store.owned import CREATE_FLAGS

IPC_OPTIONS = ipc.IpcWriteOptions(compression="zstd")
_IOV_MAX = 1024


class _Chunks:
    """A write-only file for the IPC writer that keeps one batch's bytes until they are written."""

    closed = False

    def __init__(self) -> None:
        self.parts: list = []

    def write(self, data) -> int:
        self.parts.append(data)
        return len(data)

    def flush(self) -> None:
        pass

    def take(self) -> list:
        parts, self.parts = self.parts, []
        return parts


def _write_all(fd: int, parts: list) -> None:
    views = [memoryview(p).cast("B") for p in parts if len(p)]
    i = 0
    while i < len(views):
        n = os.writev(fd, views[i:i + _IOV_MAX])
        while i < len(views) and n >= len(views[i]):
            n -= len(views[i])
            i += 1
        if n:  # a short write: continue inside this buffer
            views[i] = views[i][n:]


class InProgressSegment:
    def __init__(self, path: Path, schema: pa.Schema):
        self.path = path
        self.size = 0  # bytes of complete batches (and the schema) in the file
        self.batches = 0
        self._fd = os.open(path, CREATE_FLAGS, 0o600)  # a new file: never through a link
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self._sink = _Chunks()
            self._writer = ipc.new_stream(self._sink, schema, options=IPC_OPTIONS)
        except BaseException:
            os.close(self._fd)
            path.unlink()
            raise

    def append(self, table: pa.Table) -> None:
        """Write one batch through to the kernel; on OSError the file is cut back and closed."""
        self._writer.write_table(table)  # the first call also emits the schema
        try:
            _write_all(self._fd, self._sink.take())
        except OSError:
            self.abandon()
            raise
        self.size = os.lseek(self._fd, 0, os.SEEK_CUR)
        self.batches += 1

    def abandon(self) -> None:
        """Cut the file back to its last complete batch and close it (after a failed write)."""
        if self._fd < 0:
            return
        try:
            os.ftruncate(self._fd, self.size)  # frees blocks: needs no free space
        finally:
            self.close()

    def close(self) -> None:
        """Close the file. The end-of-stream marker is not written: readers stop at the end."""
        if self._fd < 0:
            return
        self._sink.take()
        os.close(self._fd)
        self._fd = -1
