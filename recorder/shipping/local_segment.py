"""A published segment opened for upload: the recorder's own complete file, held open, with its digests.

Only `NAME.parquet` files are ever opened (the listing is recorder/store/quota.py's: never a hidden
in-progress stream or conversion, never a file the recorder did not write), and a file is refused
unless it begins and ends with Parquet's magic (a Parquet file is complete only once its footer is
written). The upload reads the descriptor opened here, so the bytes hashed are the bytes sent even
if the recorder's quota deletes the name meanwhile; and the name is deleted after the upload only if
it still leads to this very file (device and inode).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from contract import segment_names as names
from recorder.store.owned import not_ours, own_file

PARQUET_MAGIC = b"PAR1"
_READ = 1024 * 1024


class NotShippable(Exception):
    """The file is not a complete segment of the recorder's: never uploaded (it stays in place)."""


@dataclass
class LocalSegment:
    path: Path
    name: str  # NAME, without .parquet
    size: int
    md5: bytes
    sha256: bytes
    file: BinaryIO  # positioned at 0 when opened; close() when done

    def identity(self) -> tuple[int, int]:
        st = os.fstat(self.file.fileno())
        return st.st_dev, st.st_ino

    def body(self) -> BinaryIO:
        """The file from its first byte (for each upload attempt)."""
        self.file.seek(0)
        return self.file

    def close(self) -> None:
        self.file.close()


def delete_if_same(path: Path, identity: tuple[int, int]) -> bool:
    """Remove `path` if it still is the file of this (device, inode); False when it is gone or another
    file took its name."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    if (st.st_dev, st.st_ino) != identity:
        return False
    try:
        path.unlink()
    except FileNotFoundError:  # the quota, just now
        return False
    return True


def open_segment(path: Path) -> LocalSegment:
    """Open and hash the published segment at `path`. Raises FileNotFoundError when it is gone (the
    quota deleted it), NotShippable when it is not a complete segment of the recorder's."""
    name = names.published_name(path)
    if name is None or own_file(path, name) is None:
        if not os.path.lexists(path):
            raise FileNotFoundError(path)
        raise NotShippable("not a segment the recorder wrote (see the warning above)")
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    f = os.fdopen(fd, "rb")
    try:
        reason = not_ours(os.fstat(fd))  # swapped since it was looked at
        if reason:
            raise NotShippable(f"not the recorder's file: {reason}")
        md5, sha256 = hashlib.md5(usedforsecurity=False), hashlib.sha256()
        size = 0
        head = tail = b""
        while chunk := f.read(_READ):
            if not size:
                head = chunk[:4]
            md5.update(chunk)
            sha256.update(chunk)
            size += len(chunk)
            tail = (tail + chunk)[-4:]
        if size < 12 or head != PARQUET_MAGIC or tail != PARQUET_MAGIC:
            raise NotShippable(f"not a complete Parquet file ({size} bytes, not {PARQUET_MAGIC!r} at both "
                               "ends)")
        f.seek(0)
        return LocalSegment(path, name, size, md5.digest(), sha256.digest(), f)
    except BaseException:
        f.close()
        raise
