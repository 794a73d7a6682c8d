"""Events as JSON lines: `event_line`, the one way every events output writes an event; the one-shot
`--out` file (EventsFile); and the live analyzer's events file, appended, rotated by size, and read
back after a crash (RotatingOutput).

Rotation renames `events.jsonl` to `events.jsonl.1` (the older ones shift to .2 ... .keep, the
oldest beyond is deleted) and starts a new file, always between two lines. Renaming keeps a file's
inode, which is how a checkpoint's position (inode, offset) is found again after rotations.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from analyzer.json_text import compact_sorted
from analyzer.model import Exchange
from analyzer.sinks.sink import LineFile, open_output


def event_line(ev: dict) -> str:
    """An event as one line: the one-shot `--out` and live mode both write this (the redacted event:
    its floats are JsonFloats, analyzer/json_text.py)."""
    return compact_sorted(ev)


class EventsFile(LineFile):
    """The one-shot `--out` output (a file, or stdout for '-'): every event, one line each."""

    wants_events = True

    def write_events(self, x: Exchange, events: list[dict]) -> None:
        for ev in events:
            self.write_line(event_line(ev))


class OutputError(OSError):
    pass


class RotatingOutput:
    def __init__(self, path: Path, max_bytes: int, keep: int):
        self.path = Path(path)
        self.max_bytes = max_bytes  # 0: never rotate
        self.keep = keep
        self.rotations = 0
        self._file = self._open()

    def _open(self):
        # events hold prompts and answers: 0600, never through a link (sinks/sink.py open_output)
        return os.fdopen(open_output(self.path, append=True), "ab", buffering=1 << 20)

    def files(self) -> list[Path]:
        """The output files that exist, oldest first (events.jsonl.keep ... .1, events.jsonl)."""
        return existing_files(self.path, self.keep)

    def write(self, line: str) -> None:
        data = line.encode() + b"\n"
        size = self._file.tell()
        if self.max_bytes and size and size + len(data) > self.max_bytes:
            self._rotate()
        self._file.write(data)

    def _rotate(self) -> None:
        self._file.close()
        Path(f"{self.path}.{self.keep}").unlink(missing_ok=True)
        for i in range(self.keep - 1, 0, -1):
            older = Path(f"{self.path}.{i}")
            if older.exists():
                older.rename(f"{self.path}.{i + 1}")
        self.path.rename(f"{self.path}.1")
        self._file = self._open()
        self.rotations += 1

    def flush(self) -> None:
        """Hand what is buffered to the kernel (it then survives a kill of the process)."""
        self._file.flush()

    def sync(self) -> tuple[int, int]:
        """Everything written reaches the disk; the position (inode, offset) a checkpoint records."""
        self._file.flush()
        os.fsync(self._file.fileno())
        return os.fstat(self._file.fileno()).st_ino, self._file.tell()

    def close(self) -> None:
        self._file.close()


def existing_files(path: Path, keep: int) -> list[Path]:
    rotated = [Path(f"{path}.{i}") for i in range(keep, 0, -1)]
    return [p for p in [*rotated, Path(path)] if p.exists()]


def drop_partial_line(path: Path) -> int:
    """A kill in the middle of a write leaves the last line cut short: cut it off (its event is
    written again). Returns the bytes removed."""
    if not path.exists():
        return 0
    with open(path, "rb+") as f:
        size = f.seek(0, os.SEEK_END)
        if size == 0:
            return 0
        f.seek(max(0, size - 1))
        if f.read(1) == b"\n":
            return 0
        # find the last newline, reading backwards in blocks
        end = size
        while end > 0:
            start = max(0, end - 65536)
            f.seek(start)
            block = f.read(end - start)
            i = block.rfind(b"\n")
            if i >= 0:
                f.truncate(start + i + 1)
                return size - (start + i + 1)
            end = start
        f.truncate(0)
        return size


def event_ids_after(path: Path, keep: int, position: tuple[int, int] | None) -> set[str]:
    """The ids of the events written after `position` (inode, offset) of a checkpoint: from that
    offset of the file with that inode, and all of every newer file. Without a position, or when
    that file is gone, every output file is read: knowing too many ids costs nothing, since an event
    written before the checkpoint is never made again except by connections the checkpoint knew."""
    files = existing_files(path, keep)
    start = 0
    offset = 0
    if position is not None:
        inode, off = position
        for i, f in enumerate(files):
            if f.stat().st_ino == inode:
                start, offset = i, off
                break
    ids: set[str] = set()
    for i, f in enumerate(files[start:]):
        with open(f, "rb") as fh:
            if i == 0:
                fh.seek(offset)
            for n, line in enumerate(fh):
                if not line.strip():
                    continue
                try:
                    ids.add(json.loads(line)["event_id"])
                except (ValueError, KeyError, TypeError):
                    raise OutputError(f"{f}: line {n + 1} after the checkpoint is not an event") from None
    return ids
