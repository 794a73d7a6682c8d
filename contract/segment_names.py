"""File names in a segments directory, besides the published `NAME.parquet` segments.

Only published segments match `*.parquet`: every other file a writer or a crash leaves is hidden
(leading dot) or ends in `.corrupt`, so a reader's glob never sees it.
"""

from __future__ import annotations

from pathlib import Path

from contract import segment_format as sf

HIDDEN = "."
# The segment being written: an Arrow IPC stream, appended to batch by batch (crash-safe).
IN_PROGRESS_SUFFIX = ".arrows.inprogress"
# The Parquet file being converted from an in-progress stream, renamed to NAME.parquet when done.
CONVERTING_SUFFIX = ".parquet.converting"
# Before the IPC stream, the in-progress file was a Parquet file without a footer until closed.
LEGACY_IN_PROGRESS_SUFFIX = ".parquet.inprogress"
# Leftovers that cannot be read are renamed aside, visible to an operator, invisible to readers.
CORRUPT_SUFFIX = ".corrupt"
LEGACY_CORRUPT_SUFFIX = ".footerless.corrupt"


def final_path(directory: Path, name: str) -> Path:
    return directory / f"{name}{sf.SEGMENT_SUFFIX}"


def in_progress_path(directory: Path, name: str) -> Path:
    return directory / f"{HIDDEN}{name}{IN_PROGRESS_SUFFIX}"


def converting_path(directory: Path, name: str) -> Path:
    return directory / f"{HIDDEN}{name}{CONVERTING_SUFFIX}"


def corrupt_path(directory: Path, name: str, legacy: bool = False) -> Path:
    return directory / f"{name}{LEGACY_CORRUPT_SUFFIX if legacy else CORRUPT_SUFFIX}"


def hidden_name(path: Path, suffix: str) -> str | None:
    """NAME for a hidden `.NAME<suffix>` file, else None."""
    n = path.name
    if n.startswith(HIDDEN) and n.endswith(suffix) and len(n) > len(HIDDEN) + len(suffix):
        return n[len(HIDDEN):-len(suffix)]
    return None
