"""The segment files at a URL, in the order a one-process run reads the same tree in, and the groups
that can be analyzed apart: files whose rows share a node (a connection is keyed by node, and a
node's rows are in its own files, but a file is taken at its rows' word, not its name's)."""

from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import PurePosixPath

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from analyzer.fleet.storage import Location
from analyzer.segments.files import NoSegmentsError
from analyzer.segments.reader import UNREADABLE


@dataclass(frozen=True)
class SegmentUrl:
    index: int  # in the run's order
    path: str  # inside the source's filesystem
    size: int


@dataclass
class Group:
    name: str
    nodes: list[str]
    files: list[SegmentUrl]


def find_segments(source: Location) -> list[SegmentUrl]:
    """Every `*.parquet` not hidden under the URL (a directory or prefix, searched recursively; a
    file; or a glob), sorted as a one-process run sorts paths (component by component)."""
    fs, root = source.fs()
    if glob.has_magic(root):
        found = {p: fs.info(p) for p in fs.glob(root)}
    elif fs.isdir(root):
        found = fs.find(root, detail=True)
    elif fs.isfile(root):
        found = {root: fs.info(root)}
    else:
        raise NoSegmentsError(f"no such file or directory: {source.url}")
    paths = [p for p, info in found.items() if info.get("type") == "file"
             and p.endswith(".parquet") and not PurePosixPath(p).name.startswith(".")]
    if not paths:
        raise NoSegmentsError(f"no segment files (*.parquet) under {source.url}")
    paths.sort(key=lambda p: PurePosixPath(p).parts)
    return [SegmentUrl(i, p, int(found[p].get("size") or 0)) for i, p in enumerate(paths)]


def row_nodes(source: Location, paths: list[str]) -> list[list[str] | None]:
    """The node values in each file's rows (a task: a few small reads per file); None for a file
    that cannot be read that way (the reader will say why when it is analyzed)."""
    fs, _ = source.fs()
    out: list[list[str] | None] = []
    for path in paths:
        try:
            with fs.open(path, "rb") as f:
                pf = pq.ParquetFile(f)
                column = pf.read(columns=["node"], use_threads=False)["node"].cast(pa.string())
            out.append(sorted(v for v in pc.unique(column).to_pylist() if v is not None))
        except (*UNREADABLE, KeyError):
            out.append(None)
    return out


def group_files(files: list[SegmentUrl], nodes: list[list[str] | None]) -> list[Group]:
    """Files joined when their rows share a node; a file without readable rows is a group alone."""
    parent = list(range(len(files)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first_file: dict[str, int] = {}
    for i, names in enumerate(nodes):
        for n in names or ():
            j = first_file.setdefault(n, i)
            a, b = find(i), find(j)
            parent[max(a, b)] = min(a, b)
    members: dict[int, list[int]] = {}
    for i in range(len(files)):
        members.setdefault(find(i), []).append(i)
    groups = []
    for root in sorted(members):
        idx = members[root]
        names = sorted({n for i in idx for n in nodes[i] or ()})
        groups.append(Group(f"g{root:06d}", names, [files[i] for i in idx]))
    return groups
