"""File names in a segments directory, besides the published `NAME.parquet` segments.

Only published segments match `*.parquet`: every other file a writer or a crash leaves is hidden
(leading dot) or ends in `.corrupt`, so a reader's glob never sees it.

A NAME is `{node}-{YYYYmmddTHHMMSS}-{run_id}-{seq:06d}` (`segment_name`), spelled only with the
characters of node names, timestamps and hex run ids (NAME_PATTERN): salvage and the quota take no
file whose name the recorder could not have written.
"""

from __future__ import annotations

import re
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
# Letters, digits, '.', '_' and '-', not first a dot or a dash: no hidden name, no option-like name,
# no separator, space or control character (a name is logged and passed to operators' tools).
# At most 236 characters: `.NAME.arrows.inprogress` stays within the 255 bytes of a file name.
NAME_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,235}")
_OUTSIDE = re.compile(r"[^A-Za-z0-9._-]")


def segment_name(node: str, stamp: str, run_id: str, seq: int) -> str:
    """The NAME of a run's seq-th segment. A node name with other characters (never a Kubernetes
    node name, maybe a host name) has them replaced by '_': the footer keeps the node as it is."""
    return f"{_OUTSIDE.sub('_', node).lstrip('.-') or '_'}-{stamp}-{run_id}-{seq:06d}"


def is_name(name: str) -> bool:
    """Whether NAME is spelled as the recorder spells the names it writes."""
    return NAME_PATTERN.fullmatch(name) is not None


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


def published_name(path: Path) -> str | None:
    """NAME for a published `NAME.parquet` segment, else None."""
    n = path.name
    if n.endswith(sf.SEGMENT_SUFFIX) and len(n) > len(sf.SEGMENT_SUFFIX) and not n.startswith(HIDDEN):
        return n[:-len(sf.SEGMENT_SUFFIX)]
    return None
