"""Find segment files from the paths a user gives: files, directories (recursively) or globs."""

from __future__ import annotations

import glob
from pathlib import Path


class NoSegmentsError(ValueError):
    """Nothing to analyze at the given paths: a usage error."""


def find_segments(paths: list[str]) -> list[Path]:
    """Every `*.parquet` segment under the paths, sorted by name (which sorts by node, then time)."""
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
