"""Which files of the segments directory are the recorder's own, and creating files safely there.

Segments hold plaintext, secrets included. Whatever someone else put in the directory (a symbolic
link to a victim file, a FIFO, another user's file, a name the recorder never writes) must neither
be written through, nor salvaged, nor counted or deleted by the quota. A file is the recorder's when
it is a regular file (lstat: a link is never followed), with a single name (no hard link to a file
elsewhere), owned by the recorder's uid, under a name the recorder writes (segment_names.is_name).
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from pathlib import Path

from contract import segment_names as names

log = logging.getLogger("oisp.record")

CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
# Skipped files already logged: the quota looks at the directory after every segment, and one line
# per file and reason says it all. Bounded: forgotten (and logged again) past this many.
_MAX_REPORTED = 1000
_reported: set[tuple[str, str]] = set()


def not_ours(st: os.stat_result) -> str | None:
    """Why a file with this lstat is not one the recorder wrote, or None when it is."""
    if stat.S_ISLNK(st.st_mode):
        return "a symbolic link"
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    if st.st_uid != os.geteuid():
        return f"owned by uid {st.st_uid}, not by the recorder's uid {os.geteuid()}"
    if st.st_nlink != 1:
        return f"it has {st.st_nlink} hard links"
    return None


def skipped(path: Path, reason: str) -> None:
    """Log, once per file and reason, that a file is left alone."""
    if (path.name, reason) in _reported:
        return
    if len(_reported) >= _MAX_REPORTED:
        _reported.clear()
    _reported.add((path.name, reason))
    log.warning("left %r alone, the recorder did not write it: %s", path.name, reason)


def own_file(path: Path, name: str) -> os.stat_result | None:
    """The lstat of `path` (whose NAME is `name`) when it is the recorder's own file; else None,
    after a log line saying why (nothing is logged when the file is gone)."""
    if not names.is_name(name):
        skipped(path, "a name the recorder never writes")
        return None
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    reason = not_ours(st)
    if reason:
        skipped(path, reason)
        return None
    return st


def create(path: Path) -> int:
    """Create `path` 0600 for writing, never through a link nor into an existing file: a stale
    leftover of ours (a regular file) is removed first; anything else in the way raises
    FileExistsError, and stays."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        pass
    else:
        reason = not_ours(st)
        if reason:
            raise FileExistsError(errno.EEXIST, f"something the recorder did not write is in the way "
                                                f"({reason}): left in place", str(path))
        path.unlink(missing_ok=True)
    return os.open(path, CREATE_FLAGS, 0o600)
