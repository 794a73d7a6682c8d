"""The merged records into the one-shot sinks, in order: the events file and the exchanges file get
the lines the workers made, the DuckDB sink their rows, the OTLP exporter the events."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable

from analyzer.parallel.recording import Outputs
from analyzer.parallel.records import Record
from analyzer.sinks.duckdb_tables import DuckDBSink
from analyzer.sinks.events_jsonl import EventsFile
from analyzer.sinks.exchanges_jsonl import ExchangesFile
from analyzer.sinks.sink import Sink


def outputs_for(sinks: Iterable[Sink]) -> Outputs:
    """What the workers must make for these sinks."""
    sinks = list(sinks)
    kinds = {_kind(s) for s in sinks}
    return Outputs(exchanges="exchanges" in kinds, events=bool(kinds & {"events", "otlp"}),
                   tables="tables" in kinds)


def _kind(sink: Sink) -> str:
    from analyzer.sinks.otlp_export import OtlpSink

    for cls, kind in ((EventsFile, "events"), (ExchangesFile, "exchanges"), (DuckDBSink, "tables"),
                      (OtlpSink, "otlp")):
        if isinstance(sink, cls):
            return kind
    raise TypeError(f"a parallel run cannot write to {type(sink).__name__}")


def replay(records: Iterable[Record], sinks: list[Sink], coerced: dict[str, int]) -> None:
    """Write every record to every sink; `coerced`: the workers' DuckDB coercion counts, summed."""
    writers = [_writer(s) for s in sinks]
    for r in records:
        for write in writers:
            write(r)
    for sink in sinks:
        if isinstance(sink, DuckDBSink):
            for name, n in coerced.items():
                sink.coerced[name] = sink.coerced.get(name, 0) + n


def _writer(sink: Sink) -> Callable[[Record], None]:
    kind = _kind(sink)
    if kind == "events":
        def events(r: Record) -> None:
            for line in r.events:
                sink.write_line(line)
        return events
    if kind == "exchanges":
        def exchange(r: Record) -> None:
            if r.exchange is not None:
                sink.write_line(r.exchange)
        return exchange
    if kind == "tables":
        def rows(r: Record) -> None:
            for table, row in r.rows:
                sink.add_row(table, row)
        return rows

    def otlp(r: Record) -> None:
        if r.events:
            sink.write_events(None, [json.loads(line) for line in r.events])
    return otlp
