"""A worker's outputs, in its own order, as an Arrow IPC stream file; and their merge back into the
one-process order (order.py).

One record per connection (its connections-table row) and per exchange (its --exchanges line, its
event lines, its DuckDB rows). Lines are kept as the bytes the sinks would write (UTF-8, a lone
surrogate passed through, so that writing them fails as the one-process run would); DuckDB rows as
JSON (ASCII), which gives back the same Python values. No pickle: fleet mode reads these files back
from shared storage.
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

SCHEMA = pa.schema([
    ("order", pa.int64()), ("index", pa.int32()), ("node", pa.string()),
    ("exchange", pa.large_binary()), ("events", pa.list_(pa.large_binary())), ("rows", pa.large_binary()),
])
FLUSH_RECORDS = 2048
FLUSH_BYTES = 8 << 20


@dataclass
class Record:
    order: int  # ConnectionInfo.order of its connection
    index: int  # order.CONNECTION for the connection's own record, else the exchange's index on it
    node: str
    exchange: str | None = None  # the --exchanges line
    events: list[str] = field(default_factory=list)  # the --out lines
    rows: list[tuple[str, dict]] = field(default_factory=list)  # (DuckDB table, row)

    @property
    def key(self) -> tuple[int, int]:
        return self.order, self.index


def _encode(line: str) -> bytes:
    return line.encode("utf-8", "surrogatepass")


def _decode(data: bytes) -> str:
    return data.decode("utf-8", "surrogatepass")


class RecordWriter:
    """Records to `path`, in the order given (the worker's, which order.py makes the global one's)."""

    def __init__(self, path: Path, compression: str | None = None):
        options = pa.ipc.IpcWriteOptions(compression=compression)
        self._sink = pa.OSFile(str(path), "wb")
        self._writer = pa.ipc.new_stream(self._sink, SCHEMA, options=options)
        self._columns: list[list] = [[] for _ in SCHEMA]
        self._bytes = 0
        self.records = 0

    def add(self, r: Record) -> None:
        exchange = None if r.exchange is None else _encode(r.exchange)
        events = [_encode(line) for line in r.events]
        rows = json.dumps(r.rows, separators=(",", ":")).encode() if r.rows else None
        for column, value in zip(self._columns, (r.order, r.index, r.node, exchange, events, rows),
                                 strict=True):
            column.append(value)
        self._bytes += len(exchange or b"") + sum(map(len, events)) + len(rows or b"")
        self.records += 1
        if len(self._columns[0]) >= FLUSH_RECORDS or self._bytes >= FLUSH_BYTES:
            self._flush()

    def _flush(self) -> None:
        if self._columns[0]:
            self._writer.write_batch(pa.record_batch(self._columns, schema=SCHEMA))
            self._columns = [[] for _ in SCHEMA]
            self._bytes = 0

    def close(self) -> None:
        try:
            self._flush()
            self._writer.close()
        finally:
            self._sink.close()

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_records(path: Path) -> Iterator[Record]:
    """The records of one file, batch by batch (memory: one batch)."""
    with pa.OSFile(str(path), "rb") as f:
        reader = pa.ipc.open_stream(f)
        if not reader.schema.equals(SCHEMA):
            raise ValueError(f"{path}: not a record file of this analyzer version")
        for batch in reader:
            columns = [batch.column(i).to_pylist() for i in range(batch.num_columns)]
            for order, index, node, exchange, events, rows in zip(*columns, strict=True):
                yield Record(order, index, node, None if exchange is None else _decode(exchange),
                             [_decode(e) for e in events],
                             [(t, row) for t, row in json.loads(rows)] if rows is not None else [])


def merge(streams: Iterable[Iterator[Record]]) -> Iterator[Record]:
    """The records of every worker in the one-process order: each stream is in it already (checked:
    a stream out of order would give another order, silently)."""
    return heapq.merge(*(_in_order(s) for s in streams), key=lambda r: r.key)


def _in_order(records: Iterator[Record]) -> Iterator[Record]:
    last = None
    for r in records:
        if last is not None and r.key <= last:
            raise ValueError(f"records out of order: {r.key} after {last}")
        last = r.key
        yield r
