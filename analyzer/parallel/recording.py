"""The sink of a worker's pipeline: what the one-shot sinks would write of each exchange and connection,
made here by their own code (event_line, exchanges_jsonl.dumps, DuckDBSink's rows), recorded with its
place in the one-process order (order.py) for the parent to write (replay.py)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from analyzer.config import AnalyzerConfig
from analyzer.model import ConnectionInfo, Exchange
from analyzer.parallel.order import CONNECTION
from analyzer.parallel.records import Record, RecordWriter
from analyzer.sinks.duckdb_tables import DuckDBSink
from analyzer.sinks.events_jsonl import event_line
from analyzer.sinks.exchanges_jsonl import dumps
from analyzer.sinks.sink import Sink


@dataclass(frozen=True)
class Outputs:
    """What the parent writes, so what the workers make."""

    exchanges: bool = False  # --exchanges lines
    events: bool = False  # --out lines (and OTLP, which the parent makes of them)
    tables: bool = False  # DuckDB rows

    @property
    def wants_events(self) -> bool:
        return self.events or self.tables


class _TableRows(DuckDBSink):
    """DuckDBSink's rows and its coercion counts, without a database: the parent inserts the rows."""

    def __init__(self) -> None:  # no database: only the row-making methods are used
        self.coerced: dict[str, int] = {}
        self.taken: list[tuple[str, dict]] = []

    def _add(self, table: str, row: dict) -> None:
        self.taken.append((table, row))

    def take(self) -> list[tuple[str, dict]]:
        taken, self.taken = self.taken, []
        return taken


class RecordingSink(Sink):
    def __init__(self, writer: RecordWriter, outputs: Outputs, cfg: AnalyzerConfig):
        self.writer = writer
        self.outputs = outputs
        self.cfg = cfg
        self.wants_events = outputs.wants_events
        self.tables = _TableRows() if outputs.tables else None
        self.pending: Record | None = None  # an exchange whose events come next
        # The tracker reports a connection done (write_connection) as it reads the close row, and the
        # pipeline writes that batch's exchanges after the whole batch: held until the records before
        # them in the one-process order are written, the records stay in that order.
        self.done: deque[Record] = deque()
        self.last: ConnectionInfo | None = None  # whose exchanges are being numbered
        self.index = 0

    @property
    def coerced(self) -> dict[str, int]:
        return self.tables.coerced if self.tables is not None else {}

    def write_connection(self, info: ConnectionInfo) -> None:
        rows = []
        if self.tables is not None:
            self.tables.write_connection(info)
            rows = self.tables.take()
        self.done.append(Record(self._order(info), CONNECTION, info.node, rows=rows))

    def write_exchange(self, x: Exchange) -> None:
        c = x.connection
        if c is not self.last:  # a connection's exchanges come together, in its own order
            self.last, self.index = c, 0
        r = Record(self._order(c), self.index, c.node)
        self.index += 1
        if self.outputs.exchanges:
            r.exchange = dumps(x, self.cfg.content, self.cfg.hash_key, self.cfg.limits)
        if self.tables is not None:
            self.tables.write_exchange(x)
            r.rows = self.tables.take()
        if self.wants_events:
            self.pending = r  # the pipeline hands its events next
        else:
            self._write(r)

    def write_events(self, x: Exchange, events: list[dict]) -> None:
        r, self.pending = self.pending, None
        if self.outputs.events:
            r.events = [event_line(ev) for ev in events]
        if self.tables is not None:
            self.tables.write_events(x, events)
            r.rows += self.tables.take()
        self._write(r)

    def _write(self, r: Record) -> None:
        while self.done and self.done[0].key < r.key:
            self.writer.add(self.done.popleft())
        self.writer.add(r)

    def close(self) -> str:
        while self.done:
            self.writer.add(self.done.popleft())
        return ""

    @staticmethod
    def _order(info: ConnectionInfo) -> int:
        if info.order is None:
            raise RuntimeError("a connection ended without its position: the batches need the _pos column")
        return info.order
