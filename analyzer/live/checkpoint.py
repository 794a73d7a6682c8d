"""The live analyzer's checkpoint: what a restart needs to go on without writing an event twice.

Written after every segment, atomically (temporary file, fsync, rename, fsync of the directory),
the temporary file created anew (O_EXCL|O_NOFOLLOW, 0600: never written through a planted link), and
only after the events file has been synced to the position it records. See docs/analyzer.md
("Checkpoint") for why these fields suffice.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

VERSION = 1
# An `ended` tag that sorts after every segment name: the connection's rows are dropped everywhere.
ALWAYS = "\U0010ffff"

Key = tuple[str, str]  # (node, conn_id)


class CheckpointError(ValueError):
    """The checkpoint file is unreadable or not one of ours."""


@dataclass
class Checkpoint:
    segments_dir: str
    # (inode, offset) of the events file when the checkpoint was written
    output: tuple[int, int] | None = None
    # segments fully processed (those still in the directory)
    processed: set[str] = field(default_factory=set)
    # processed segments set aside because reading them raised: never read again (a subset of processed)
    failed: set[str] = field(default_factory=set)
    # connections still open -> the segment of their first row; the oldest is where a restart re-reads from
    open: dict[Key, str] = field(default_factory=dict)
    # connections already handed out -> the last segment whose rows of them are to be dropped on re-reading
    ended: dict[Key, str] = field(default_factory=dict)
    # connections that expired -> exchanges numbered so far (ConnectionTracker.resumable)
    resumable: dict[Key, int] = field(default_factory=dict)
    # ids of events written -> the segment being processed then; kept while a re-read could make them
    written: dict[str, str] = field(default_factory=dict)
    # the newest row time read (ns): the clock that expires silent connections
    input_now_ns: int = 0

    @property
    def replay_from(self) -> str | None:
        return min(self.open.values()) if self.open else None


def path_for(output: Path) -> Path:
    """Next to the events file, hidden, so that `events.jsonl*` globs of log shippers miss it."""
    return output.with_name(f".{output.name}.checkpoint")


def save(cp: Checkpoint, path: Path) -> None:
    by_tag: dict[str, list[str]] = {}
    for event_id, tag in cp.written.items():
        by_tag.setdefault(tag, []).append(event_id)
    doc = {
        "version": VERSION,
        "segments_dir": cp.segments_dir,
        "output": list(cp.output) if cp.output else None,
        "processed": sorted(cp.processed),
        "failed": sorted(cp.failed),
        "open": sorted([n, c, s] for (n, c), s in cp.open.items()),
        "ended": sorted([n, c, s] for (n, c), s in cp.ended.items()),
        "resumable": [[n, c, k] for (n, c), k in cp.resumable.items()],  # oldest first
        "written": {tag: sorted(ids) for tag, ids in sorted(by_tag.items())},
        "input_now_ns": cp.input_now_ns,
    }
    tmp = path.with_name(path.name + ".tmp")
    with os.fdopen(_create(tmp), "w", encoding="utf-8") as f:
        json.dump(doc, f, separators=(",", ":"))
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _create(tmp: Path) -> int:
    """A new file, 0600, never opened through a link nor into someone else's file: a stale leftover
    (a regular file of ours, from a crash before the rename) is removed first; anything else in the
    way raises FileExistsError and stays."""
    try:
        st = os.lstat(tmp)
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
            raise FileExistsError(errno.EEXIST, "not a regular file of ours, left in place", str(tmp))
        tmp.unlink(missing_ok=True)
    return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)


def load(path: Path) -> Checkpoint | None:
    """The checkpoint at path, None when there is none; CheckpointError when it cannot be trusted."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"cannot read it: {exc}") from None
    try:
        doc = json.loads(text)
        if not isinstance(doc, dict) or doc.get("version") != VERSION:
            raise CheckpointError(f"not a version {VERSION} checkpoint")
        output = doc["output"]
        if output is not None:
            inode, offset = output
            output = (_int(inode), _int(offset))
        return Checkpoint(
            segments_dir=_str(doc["segments_dir"]),
            output=output,
            processed={_str(n) for n in doc["processed"]},
            failed={_str(n) for n in doc.get("failed", [])},  # absent from checkpoints of before
            open={(_str(n), _str(c)): _str(s) for n, c, s in doc["open"]},
            ended={(_str(n), _str(c)): _str(s) for n, c, s in doc["ended"]},
            resumable={(_str(n), _str(c)): _int(k) for n, c, k in doc["resumable"]},
            written={_str(i): _str(tag) for tag, ids in doc["written"].items() for i in ids},
            input_now_ns=_int(doc["input_now_ns"]),
        )
    except CheckpointError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"malformed ({type(exc).__name__}: {exc})") from None


def _str(v) -> str:
    if not isinstance(v, str):
        raise TypeError(f"expected a string, got {v!r}")
    return v


def _int(v) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise TypeError(f"expected a non-negative integer, got {v!r}")
    return v
