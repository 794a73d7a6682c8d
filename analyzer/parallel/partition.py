"""Which worker analyzes which connection: each (node, conn_id) goes whole to one of N partitions, by a
hash that is the same in every process and on every run (not Python's salted hash()); `process` rows go
to every partition, so identities resolve as in one process.

One thing joins connections in the tracker: the two ends of a plaintext TCP connection captured on
one node are paired by their addresses (ConnectionTracker._pair), which decides which end reports the
call. `plaintext_groups` reads the socket rows first (a few small columns) and keeps every set of
plaintext connections that share a pair of addresses in one partition. The tracker remembers at most
MAX_PLAIN_ENDS ends; with more plaintext socket rows than that in the input, what it forgets depends
on every other end, so then all plaintext connections share one partition (the one-process order of
those ends is then the partition's)."""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from analyzer.segments.reader import UNREADABLE
from analyzer.streams.tracker import MAX_PLAIN_ENDS
from contract import segment_format as sf

_SEP = "\x00"
_SOCKET_COLUMNS = ["kind", "node", "conn_id", "tls_stack", "local_ip", "local_port", "peer_ip", "peer_port"]
ALL_PLAINTEXT = "\x00plaintext"  # the group of every plaintext connection, past MAX_PLAIN_ENDS


def connection_key(node: str, conn_id: str) -> str:
    return f"{node}{_SEP}{conn_id}"


def partition_of(key: str, parts: int) -> int:
    digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % parts


def partition_mask(batch: pa.RecordBatch, part: int, parts: int, groups: dict[str, str]) -> pa.Array:
    """The rows of the batch that partition `part` of `parts` analyzes: its connections' rows and
    every process row."""
    node = batch.column("node").cast(pa.string())
    conn = batch.column("conn_id").cast(pa.string())
    keys = pc.binary_join_element_wise(node, conn, _SEP).dictionary_encode()  # null: a null conn_id
    owners = [partition_of(groups.get(k, k), parts) for k in keys.dictionary.to_pylist()]
    mine = pc.equal(pc.take(pa.array(owners, pa.int32()), keys.indices), part)
    process = pc.equal(batch.column("kind").cast(pa.string()), sf.KIND_PROCESS)
    return pc.fill_null(pc.or_kleene(process, mine), False)


class _Groups:
    """Union-find over connection keys and address pairs."""

    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, x: str) -> str:
        root = x
        while self.parent.setdefault(root, root) != root:
            root = self.parent[root]
        while self.parent[x] != root:
            self.parent[x], x = root, self.parent[x]
        return root

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def plaintext_groups(files: Iterable[BinaryIO | None]) -> dict[str, str]:
    """connection key -> the key of the group it shares a partition with, for the plaintext
    connections that share addresses with another (the others are their own group: not listed).
    `files`: each open for reading (closed here), or None for one the reader will skip. Over-joining is
    harmless (it only puts connections in one partition): any row of a connection that says
    plaintext makes it one, whatever its other rows say."""
    plaintext: set[str] = set()
    sockets: list[tuple[str, tuple]] = []  # (connection key, its address pair)
    for f in files:
        if f is None:
            continue
        with f:
            try:
                table = _socket_columns(f)
            except UNREADABLE:
                continue  # the reader reports it (and reads none of its rows)
        if table is None:
            continue
        keys = pc.binary_join_element_wise(table["node"], table["conn_id"], _SEP)
        plain = pc.equal(table["tls_stack"], sf.TLS_STACK_PLAINTEXT)
        plaintext.update(k for k in pc.filter(keys, pc.fill_null(plain, False)).to_pylist() if k is not None)
        socket = pc.fill_null(pc.equal(table["kind"], sf.KIND_SOCKET), False)
        rows = table.filter(socket).append_column("key", pc.filter(keys, socket)).to_pylist()
        for r in rows:
            if r["key"] is not None:
                ends = sorted([(r["local_ip"] or "", r["local_port"] or -1),
                               (r["peer_ip"] or "", r["peer_port"] or -1)])
                sockets.append((r["key"], (r["node"], *ends[0], *ends[1])))
    groups = _Groups()
    plain_sockets = [(key, ends) for key, ends in sockets if key in plaintext]
    if len(plain_sockets) > MAX_PLAIN_ENDS:  # the tracker forgets ends: keep its order of all of them
        return dict.fromkeys(plaintext, ALL_PLAINTEXT)
    for key, ends in plain_sockets:
        groups.union(key, _SEP + repr(ends))  # address groups start with the separator: no key does
    # a group's members all map to its least connection key (the root, as union keeps the least)
    members: dict[str, list[str]] = {}
    for key in plaintext:
        members.setdefault(groups.find(key), []).append(key)
    return {k: root for root, keys in members.items() if len(keys) > 1 for k in keys}


def _socket_columns(f: BinaryIO) -> pa.Table | None:
    pf = pq.ParquetFile(f)
    if any(c not in pf.schema_arrow.names for c in _SOCKET_COLUMNS):  # before format 4: no plaintext
        return None
    table = pf.read(columns=_SOCKET_COLUMNS, use_threads=False)
    return table.cast(pa.schema([(c, pa.int64() if c.endswith("_port") else pa.string())
                                 for c in _SOCKET_COLUMNS]))


def open_regular(path: Path) -> BinaryIO | None:
    """The file at `path` opened for reading if it is a regular file (never blocking on a FIFO), else None."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError:
        return None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")
