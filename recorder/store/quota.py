"""Delete the oldest published segments of a directory, to keep it under a quota or to make room.

Segment names sort by node, then start time, so within one node's directory the first name is the
oldest. Only `*.parquet` files are touched: never a segment being written or converted. And only
the recorder's own (owned.py): a file planted under a segment's name neither counts against the
quota nor is deleted, it is logged once and left alone.
"""

from __future__ import annotations

import logging
from pathlib import Path

from contract import segment_format as sf
from contract import segment_names as names
from recorder.store.owned import own_file

log = logging.getLogger("oisp.record")


def published_segments(directory: Path) -> list[tuple[Path, int]]:
    """Published segments, oldest first, with their sizes in bytes."""
    out = []
    for path in sorted(directory.glob(f"*{sf.SEGMENT_SUFFIX}")):
        st = own_file(path, names.published_name(path) or path.name)
        if st is not None:  # else not ours, or deleted meanwhile (by an operator or a collector)
            out.append((path, st.st_size))
    return out


def _delete(path: Path, size: int, why: str) -> bool:
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    log.info("deleted segment %s (%d bytes): %s", path.name, size, why)
    return True


def enforce_quota(directory: Path, max_total_bytes: int) -> list[tuple[Path, int]]:
    """Delete the oldest segments until all of them total at most `max_total_bytes`. The newest is
    kept even when it alone is over the quota: a quota below one segment must not erase everything."""
    segments = published_segments(directory)
    total = sum(size for _, size in segments)
    deleted = []
    for path, size in segments[:-1]:
        if total <= max_total_bytes:
            break
        total -= size
        if _delete(path, size, f"segments total over the quota of {max_total_bytes} bytes"):
            deleted.append((path, size))
    return deleted


def make_room(directory: Path, needed_bytes: int) -> list[tuple[Path, int]]:
    """Delete the oldest segments until at least `needed_bytes` are freed (the disk is full)."""
    deleted = []
    freed = 0
    for path, size in published_segments(directory):
        if freed >= needed_bytes:
            break
        if _delete(path, size, "the disk is full"):
            deleted.append((path, size))
            freed += size
    return deleted
