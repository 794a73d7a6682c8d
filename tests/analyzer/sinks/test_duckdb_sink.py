"""The DuckDB sink: values of an unexpected type in events are coerced or nulled and counted, never a
reason to stop; rows are written by a byte budget as well as a row count, so memory stays bounded
whatever the prompts' size."""

from __future__ import annotations

import copy
import json
import subprocess
from pathlib import Path

import duckdb
import pytest

from analyzer.config import AnalyzerConfig
from analyzer.pipeline import Pipeline
from analyzer.segments.files import find_segments
from analyzer.segments.reader import ReadReport, read_batches
from analyzer.sinks import duckdb_tables
from analyzer.sinks.duckdb_tables import EVENT_TYPES, DuckDBSink, coerce
from analyzer.sinks.sink import Sink
from conftest import BIN, REPO

SAMPLES = REPO / "samples" / "segments"


class Events(Sink):
    wants_events = True

    def __init__(self):
        self.events: list[dict] = []

    def write_events(self, x, events):
        self.events += events


@pytest.fixture(scope="module")
def sample_events() -> list[dict]:
    sink = Events()
    pipeline = Pipeline(AnalyzerConfig(), [sink])
    pipeline.run(read_batches(find_segments([str(SAMPLES)]), ReadReport()))
    pipeline.close()
    return sink.events


def bent(ev: dict) -> dict:
    """The event with values a captured body may bend: a numeric model, token counts as text or
    too large for any integer column, a streaming flag that is a string."""
    ev = copy.deepcopy(ev)
    ev["data"]["model"] = {"id": 123}
    ev["data"]["streaming"] = "yes"
    ev["data"]["finish_reason"] = {"nested": True}
    ev["data"]["usage"] = {"prompt_tokens": "12", "completion_tokens": 1 << 70, "total_tokens": True}
    return ev


def table(path: Path, sql: str) -> list[tuple]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return con.sql(sql).fetchall()
    finally:
        con.close()


def test_type_bent_event_values_are_coerced_not_fatal(tmp_path, sample_events):
    # the bent event first: the first batch must not decide a column's type
    events = [bent(sample_events[0])] + sample_events
    sink = DuckDBSink(tmp_path / "t.duckdb")
    for ev in events:
        sink.add_event(ev)
    summary = sink.close()
    assert sink.coerced == {"model": 1, "streaming": 1, "finish_reason": 1, "prompt_tokens": 1,
                            "completion_tokens": 1, "total_tokens": 1}
    assert summary.startswith("6 DuckDB value(s) of an unexpected type coerced or nulled (")
    rows = table(tmp_path / "t.duckdb", "SELECT model, streaming, finish_reason, prompt_tokens, "
                 "completion_tokens, total_tokens, event_json FROM events ORDER BY rowid")
    assert len(rows) == len(events)
    assert rows[0][:6] == ("123", None, None, None, None, None)
    assert json.loads(rows[0][6])["data"]["model"] == {"id": 123}  # the event itself, as it was
    assert {r[0] for r in rows[1:]} == {ev["data"].get("model", {}).get("id") for ev in sample_events}
    types = dict(table(tmp_path / "t.duckdb", "SELECT column_name, data_type FROM information_schema.columns "
                       "WHERE table_name = 'events'"))
    assert types["model"] == "VARCHAR" and types["prompt_tokens"] == "BIGINT"


def test_well_formed_events_need_no_coercion(tmp_path, sample_events):
    sink = DuckDBSink(tmp_path / "t.duckdb")
    for ev in sample_events:
        sink.add_event(ev)
    assert sink.close() == "" and sink.coerced == {}


@pytest.mark.parametrize("value, type_, expected", [
    (123, duckdb_tables.pa.string(), ("123", True)),
    (1.5, duckdb_tables.pa.string(), ("1.5", True)),
    (float("nan"), duckdb_tables.pa.string(), (None, True)),
    ([1], duckdb_tables.pa.string(), (None, True)),
    ("x", duckdb_tables.pa.string(), ("x", False)),
    (True, duckdb_tables.pa.int64(), (None, True)),
    (2.0, duckdb_tables.pa.int64(), (None, True)),
    (-(1 << 63), duckdb_tables.pa.int64(), (-(1 << 63), False)),
    (1 << 63, duckdb_tables.pa.int64(), (None, True)),
    (3, duckdb_tables.pa.float64(), (3.0, False)),
    ("0.1", duckdb_tables.pa.float64(), (None, True)),
    (1, duckdb_tables.pa.bool_(), (None, True)),
    (None, duckdb_tables.pa.bool_(), (None, False)),
])
def test_coerce(value, type_, expected):
    assert coerce(value, type_) == expected


def test_event_columns_follow_the_declared_types(sample_events):
    sink = DuckDBSink.__new__(DuckDBSink)
    sink.rows, sink.pending_bytes, sink.coerced = {"events": []}, {"events": 0}, {}
    sink.peak_pending_bytes = 0
    sink.add_event(sample_events[0])
    assert list(sink.rows["events"][0]) == list(EVENT_TYPES)


def test_rows_are_written_by_a_byte_budget(tmp_path, sample_events, monkeypatch):
    """Large prompts: what is held before a write stays within the byte budget (plus one row)
    however few rows that is; before, only the row count (5,000) bounded it."""
    budget = 1 << 20
    monkeypatch.setattr(duckdb_tables, "FLUSH_BYTES", budget)
    request = next(ev for ev in sample_events if ev["event_type"] == "ai.request")
    sink = DuckDBSink(tmp_path / "t.duckdb")
    n = 60
    for i in range(n):
        ev = copy.deepcopy(request)
        ev["event_id"] = f"e{i}"
        ev["data"]["messages"] = [{"role": "user", "content": "p" * 100_000}]  # a 100 KB prompt
        sink.add_event(ev)
    row_bytes = duckdb_tables._row_bytes(sink.rows["events"][-1])
    sink.close()
    assert row_bytes > 100_000
    assert sink.peak_pending_bytes <= budget + row_bytes
    assert sink.flushes >= n * 100_000 // (budget + row_bytes)  # several writes, not one at the close
    assert table(tmp_path / "t.duckdb", "SELECT count(*) FROM events") == [(n,)]


def test_cli_reports_coercions(tmp_path):
    """End to end: a run whose events are well formed says nothing more (the byte-identical outputs
    are checked elsewhere); the summary line gains the piece only when something was coerced."""
    result = subprocess.run([str(BIN / "oisp-analyze"), str(SAMPLES), "--duckdb", str(tmp_path / "t.duckdb")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "coerced" not in result.stderr
