"""Find segment files from the paths a user gives: files, directories (recursively) or globs."""

from __future__ import annotations

import glob
import os
import stat
from pathlib import Path


class NoSegmentsError(ValueError):
    """Nothing to analyze at the given paths: a usage error."""


def find_segments(paths: list[str]) -> list[Path]:
    """Every `*.parquet` segment under the paths, sorted by name (which sorts by node, then time).
    Whatever is named so is listed, FIFOs included: the reader skips what is not a regular file
    (`not_regular`), with its reason."""
    found: set[Path] = set()
    for p in paths:
        matches = [Path(m) for m in glob.glob(p, recursive=True)] if glob.has_magic(p) else [Path(p)]
        if not matches or not all(m.exists() for m in matches):
            raise NoSegmentsError(f"no such file or directory: {p}")
        for m in matches:
            if m.is_dir():
                found.update(f for f in m.rglob("*.parquet") if not f.name.startswith("."))
            else:
                found.add(m)
    if not found:
        raise NoSegmentsError(f"no segment files (*.parquet) under {', '.join(paths)}")
    return sorted(found)


_KINDS = [(stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")]


def kind_of(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def not_regular(path: Path) -> str | None:
    """Why `path` is not a file to open, or None: only regular files are (a FIFO would block the
    reader forever, opening a device may do anything). A symbolic link to a regular file is read,
    a link to anything else is not followed further than its lstat and stat."""
    try:
        st = os.lstat(path)
        link = stat.S_ISLNK(st.st_mode)
        if link:
            st = os.stat(path)
    except OSError as exc:
        return f"unreadable: {exc.strerror}"
    if stat.S_ISREG(st.st_mode):
        return None
    return f"not a regular file: {'a symbolic link to ' if link else ''}{kind_of(st.st_mode)}"
