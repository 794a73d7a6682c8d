"""One group's outputs, from its records in the one-process order, written under the output URL:

    events/date=YYYY-MM-DD/node=NODE/events.jsonl     the --out lines of that day's events of that node
    events/date=YYYY-MM-DD/node=NODE/events.parquet   the same events as rows of the DuckDB events table
    tables/events/date=YYYY-MM-DD/node=NODE/events.parquet
    tables/{exchanges,connections,processes,ai_calls}/node=NODE/NAME.parquet

The tables are the ones `--duckdb` makes (analyzer/sinks/duckdb_tables.py, which makes them here too,
in a local database: same columns, same types, same rows), one file per node. The day is the
event's `ts` (UTC); the node is the connection's. Node names are percent-encoded in paths. Each file
is built locally, then uploaded whole."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import quote

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from analyzer.fleet.storage import Location, put
from analyzer.parallel.records import Record
from analyzer.sinks.duckdb_tables import EVENT_TYPES, DuckDBSink

NODE_TABLES = ("exchanges", "connections", "processes", "ai_calls")
EVENTS_SCHEMA = pa.schema(list(EVENT_TYPES.items()))
PARQUET_ROWS = 5000  # event rows held per file before they are written
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")


def event_day(row: dict) -> str:
    ts = row.get("ts")
    return ts[:10] if isinstance(ts, str) and _DAY.match(ts) else "unknown"


def node_dir(node: str | None) -> str:
    return "node=" + quote(node or "", safe="")


class _EventFiles:
    """The events of one (day, node): JSON lines and Parquet rows, appended in order."""

    def __init__(self, directory: Path):
        directory.mkdir(parents=True, exist_ok=True)
        self.jsonl = directory / "events.jsonl"
        self.parquet = directory / "events.parquet"
        self.lines = open(self.jsonl, "w", encoding="utf-8")  # noqa: SIM115 - closed by close()
        self.writer = pq.ParquetWriter(self.parquet, EVENTS_SCHEMA, compression="zstd")
        self.rows: list[dict] = []

    def add(self, line: str, row: dict) -> None:
        self.lines.write(line + "\n")
        self.rows.append(row)
        if len(self.rows) >= PARQUET_ROWS:
            self.flush()

    def flush(self) -> None:
        if self.rows:
            self.writer.write_table(pa.Table.from_pylist(self.rows, schema=EVENTS_SCHEMA))
            self.rows = []

    def close(self) -> None:
        self.flush()
        self.writer.close()
        self.lines.close()


def write_outputs(records: Iterable[Record], coerced: dict[str, int], tmp: Path, out: Location) \
        -> list[tuple[str, int]]:
    """Build the group's files under tmp from its records, upload them under `out`; (path, bytes) of each."""
    tmp.mkdir(parents=True, exist_ok=True)
    events: dict[tuple[str, str], _EventFiles] = {}
    database = tmp / "tables.duckdb"
    tables = DuckDBSink(database)
    try:
        for r in records:
            event_rows = [row for table, row in r.rows if table == "events"]
            for line, row in zip(r.events, event_rows, strict=True):
                key = (event_day(row), node_dir(row.get("node")))
                if key not in events:
                    events[key] = _EventFiles(tmp / "events" / f"date={key[0]}" / key[1])
                events[key].add(line, row)
            for table, row in r.rows:
                tables.add_row(table, row)
        for name, n in coerced.items():
            tables.coerced[name] = tables.coerced.get(name, 0) + n
    finally:
        for f in events.values():
            f.close()
        tables.close()
    built = []
    for (day, node), f in sorted(events.items()):
        built += [(f"events/date={day}/{node}/events.jsonl", f.jsonl),
                  (f"events/date={day}/{node}/events.parquet", f.parquet),
                  (f"tables/events/date={day}/{node}/events.parquet", f.parquet)]
    built += _node_tables(database, tmp / "tables")
    out_fs, root = out.fs()
    for relative, local in built:
        put(local, out_fs, f"{root}/{relative}")
    return [(relative, local.stat().st_size) for relative, local in built]


def _node_tables(database: Path, tmp: Path) -> list[tuple[str, Path]]:
    """Each table, one Parquet file per node, rows in the table's order."""
    built = []
    with duckdb.connect(str(database), read_only=True) as con:
        have = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        for table in NODE_TABLES:
            if table not in have:
                continue
            nodes = [r[0] for r in con.execute(f"SELECT DISTINCT node FROM {table} ORDER BY node").fetchall()]
            for node in nodes:
                path = tmp / table / node_dir(node) / f"{table}.parquet"
                path.parent.mkdir(parents=True, exist_ok=True)
                query = f"SELECT * FROM {table} WHERE node IS NOT DISTINCT FROM ? ORDER BY rowid"
                reader = con.sql(query, params=[node]).to_arrow_reader()
                with pq.ParquetWriter(path, reader.schema, compression="zstd") as writer:
                    for batch in reader:
                        writer.write_batch(batch)
                built.append((f"tables/{table}/{node_dir(node)}/{table}.parquet", path))
    return built
