"""The input of `oisp-analyze report`: a DuckDB file written by `oisp-analyze --duckdb`, opened
read-only, or an events file written by `--out`, loaded through the same DuckDBSink into a temporary
database so that its ai_calls table is built by exactly the same code."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

from analyzer.segments.reader import one_line
from analyzer.sinks.duckdb_tables import DuckDBSink

DUCKDB_MAGIC = b"DUCK"  # at bytes 8..12 of a DuckDB database file
_EVENT_KEYS = ("event_id", "event_type", "ts")  # what DuckDBSink.add_event needs of an event


class ReportSourceError(Exception):
    """The source cannot be reported on: why, in one line (the caller names the source)."""


def is_duckdb(head: bytes) -> bool:
    return head[8:12] == DUCKDB_MAGIC


@contextmanager
def open_calls(source: Path, notes: list[str]) -> Iterator[duckdb.DuckDBPyConnection | None]:
    """A read-only connection whose ai_calls table holds the source's calls; None for an events file
    that holds no event. What the events sink had to coerce is appended to `notes`."""
    try:
        with open(source, "rb") as f:
            head = f.read(12)
    except OSError as exc:
        raise ReportSourceError(f"cannot read: {exc.strerror or exc}") from None
    if is_duckdb(head):
        con = _connect(source)
        try:
            yield con
        finally:
            con.close()
        return
    with tempfile.TemporaryDirectory(prefix="oisp-report-") as tmp:
        db = Path(tmp) / "events.duckdb"
        if not _load_events(source, db, notes):
            yield None
            return
        con = _connect(db)
        try:
            yield con
        finally:
            con.close()


def _connect(path: Path) -> duckdb.DuckDBPyConnection:
    try:
        con = duckdb.connect(str(path), read_only=True)
    except duckdb.Error as exc:  # corrupt, of another DuckDB version, locked by a writer
        raise ReportSourceError(f"cannot open as DuckDB: {one_line(str(exc))}") from None
    have = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    if "ai_calls" not in have:
        con.close()
        raise ReportSourceError("a DuckDB database with no ai_calls table (not written by oisp-analyze "
                                "--duckdb, or from segments with no AI call)")
    return con


def _load_events(source: Path, db: Path, notes: list[str]) -> int:
    """The events of a JSON-lines file into a new database at `db`: how many there were."""
    sink = DuckDBSink(db)
    n_events = 0
    try:
        with open(source, "rb") as f:
            for n, raw in enumerate(f, 1):
                if not raw.strip():
                    continue
                try:
                    ev = json.loads(raw)
                except ValueError:  # UnicodeDecodeError included: a binary file fails on its first line
                    raise ReportSourceError(
                        "neither a DuckDB database nor OISP events as JSON lines "
                        f"(line {n} is not JSON)") from None
                if not isinstance(ev, dict) or not all(isinstance(ev.get(k), str) for k in _EVENT_KEYS):
                    raise ReportSourceError(
                        f"line {n} is not an OISP event (an object with event_id, event_type and ts)")
                sink.add_event(ev)
                n_events += 1
    except OSError as exc:
        raise ReportSourceError(f"cannot read: {exc.strerror or exc}") from None
    finally:
        note = sink.close()
        if note:
            notes.append(note)
    return n_events
