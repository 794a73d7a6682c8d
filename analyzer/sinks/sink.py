"""What every output of the analysis is to the pipeline (analyzer/pipeline.py): a sink it hands
each exchange, the events made of it, and each connection when it is done; closed at the end.

Output files hold prompts and answers: `open_output` creates them 0600 and never writes through a
link planted at their path nor into another user's file (a shared directory such as /tmp)."""

from __future__ import annotations

import errno
import os
import stat
import sys
from pathlib import Path

from analyzer.model import ConnectionInfo, Exchange


class Sink:
    """The sink protocol, each method doing nothing until a sink needs it."""

    wants_events = False  # True: the pipeline builds the events of each exchange for this sink

    def write_exchange(self, x: Exchange) -> None:
        """Every exchange, as its connection closes (or live mode hands it out)."""

    def write_events(self, x: Exchange, events: list[dict]) -> None:
        """The events of an exchange (often none: not every exchange is an AI call)."""

    def write_connection(self, info: ConnectionInfo) -> None:
        """A connection, once it is done."""

    def close(self) -> str:
        """Finish; a piece of the run's summary line, "" for none."""
        return ""


OUTPUT_MODE = 0o600


class OutputFileError(OSError):
    """An output file that cannot or must not be written; the message is one line."""


def output_problem(path: Path) -> str | None:
    """Why `path` cannot be an output file (checked before any is opened), or None. `open_output`
    checks again, as it opens: what is at the path may change in between."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        parent = Path(path).parent
        if not parent.is_dir():
            return f"{parent} is not a directory" if parent.exists() else f"no directory {parent}"
        return None if os.access(parent, os.W_OK | os.X_OK) else f"cannot create files in {parent}"
    except OSError as exc:
        return exc.strerror or str(exc)
    return _not_writable(st)


def _not_writable(st: os.stat_result) -> str | None:
    if stat.S_ISLNK(st.st_mode):
        return "is a symbolic link (not followed)"
    if stat.S_ISDIR(st.st_mode):
        return "is a directory"
    if stat.S_ISREG(st.st_mode):
        return None if st.st_uid == os.geteuid() else f"is owned by uid {st.st_uid}, not by this user"
    if stat.S_ISCHR(st.st_mode) or stat.S_ISFIFO(st.st_mode):
        return None  # /dev/null, a pipe to another program: nothing is left on disk
    return "is not a regular file, a character device or a FIFO"


def open_output(path: Path, append: bool = False) -> int:
    """A descriptor writing `path`: a new file is created 0600; an existing one must be a regular
    file of this user (then truncated, or appended to, and made 0600), a character device or a FIFO
    with a reader (never waited on). A symbolic link at the path is refused, never followed.
    OutputFileError (one line) otherwise."""
    flags = (os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
             | (os.O_APPEND if append else 0))
    try:
        fd = os.open(path, flags, OUTPUT_MODE)
    except OSError as exc:
        why = {errno.ELOOP: "is a symbolic link (not followed)", errno.ENXIO: "is a FIFO nobody reads"}
        raise OutputFileError(f"cannot write {path}: {why.get(exc.errno) or exc.strerror}") from None
    try:
        st = os.fstat(fd)
        why = _not_writable(st)
        if why:
            raise OutputFileError(f"cannot write {path}: {why}")
        if stat.S_ISREG(st.st_mode):
            if not append:
                os.ftruncate(fd, 0)
            if stat.S_IMODE(st.st_mode) != OUTPUT_MODE:
                os.fchmod(fd, OUTPUT_MODE)
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


class LineFile(Sink):
    """A sink writing lines to a file (opened by `open_output`), or to stdout for '-'."""

    def __init__(self, path: Path):
        if str(path) == "-":
            self.file = sys.stdout
        else:
            # written whole and closed at the end of the run: a large buffer (8 KiB wrote 120 MB of events
            # in 15,000 calls to the kernel, 3x the time of 1 MiB)
            self.file = os.fdopen(open_output(path), "w", encoding="utf-8", buffering=1 << 20)

    def write_line(self, line: str) -> None:
        self.file.write(line + "\n")

    def close(self) -> str:
        if self.file is not sys.stdout:
            self.file.close()
        return ""
