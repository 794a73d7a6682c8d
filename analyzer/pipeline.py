"""The analysis, from segment rows to every output: record batches -> connections and exchanges
(analyzer/streams/tracker.py) -> OISP events (analyzer/ai/exchange_events.py) -> sinks
(analyzer/sinks/: events and exchanges JSONL, DuckDB, OTLP).

The one-shot command runs it whole (`run`). Live mode (analyzer/live/follow.py) feeds its tracker
segment by segment and builds events here (`events_of`), but writes the events file itself, once per
event id, and hands the other sinks only what it wrote (`write_events`). Both make events with the
same registry and options, built here only, so both write the same lines for the same input.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import pyarrow as pa

from analyzer.ai.events import EventOptions
from analyzer.ai.exchange_events import analyze_exchange
from analyzer.ai.providers import ProviderRegistry
from analyzer.config import AnalyzerConfig
from analyzer.http.redaction import redact_event
from analyzer.model import ConnectionInfo, Exchange
from analyzer.sinks.sink import Sink
from analyzer.streams.tracker import ConnectionTracker


def event_options(cfg: AnalyzerConfig) -> EventOptions:
    return EventOptions(content=cfg.content, limits=cfg.limits, prices=cfg.prices,
                        **({"hash_key": cfg.hash_key} if cfg.hash_key else {}))


class Pipeline:
    """Exchanges and their events to each sink. `export`: add the OTLP sink of cfg.otlp now (live mode
    adds it later, with `open_export`, once its checkpoint is loaded)."""

    def __init__(self, cfg: AnalyzerConfig, sinks: Iterable[Sink] = (),
                 on_close: Callable[[ConnectionInfo], None] | None = None, export: bool = True):
        self.cfg = cfg
        self.registry = ProviderRegistry(cfg.endpoints)
        self.event_opts = event_options(cfg)
        self.sinks: list[Sink] = list(sinks)
        self.on_close = on_close
        self.tracker = ConnectionTracker(on_close=self._connection_done, limits=cfg.limits)
        self.otlp = None  # the OtlpSink (analyzer/sinks/otlp_export.py), when exporting
        self.exchanges = self.incomplete = self.events = 0
        self.event_errors = 0  # exchanges whose events could not be built as parsed (Exchange.parse_error)
        if export:
            self.open_export()

    def open_export(self):
        """Add the OTLP sink of the config's export.otlp, if any; returns it (None without)."""
        if self.cfg.otlp is None:
            return None
        from analyzer.sinks.otlp_export import OtlpSink

        # prompts and answers go out only when the events carry them as captured (--content full)
        self.otlp = OtlpSink(self.cfg.otlp, capture_content=self.cfg.content == "full")
        self.sinks.append(self.otlp)
        return self.otlp

    @property
    def wants_events(self) -> bool:
        return any(s.wants_events for s in self.sinks)

    def run(self, batches: Iterable[pa.RecordBatch]) -> None:
        """All the input: exchanges are written as their connections close, so memory holds open
        connections only. The order follows the input (files by name, rows in file order)."""
        for x in self.tracker.process(batches):
            self.write(x)

    @property
    def parse_errors(self) -> int:
        """Connections whose protocol parser raised, plus exchanges whose events could not be built:
        each kept its run going and is marked in the outputs."""
        return self.tracker.parse_errors + self.event_errors

    def events_of(self, x: Exchange) -> list[dict]:
        """The exchange's events, redacted once here for every sink (JSONL, DuckDB, OTLP, live); a
        failure to build them marks the exchange and is counted."""
        result = analyze_exchange(x, self.registry, self.event_opts)
        if result.parse_error is not None:
            self.event_errors += 1
            x.parse_error = result.parse_error
            x.notes.append(f"parse error ({result.parse_error}): events built from what is known")
        return [redact_event(ev, self.event_opts.content) for ev in result.events]

    def write(self, x: Exchange) -> None:
        """An exchange, and its events if a sink wants them, to every sink. The events are built first,
        so that the exchange's record says whether building them failed."""
        self.exchanges += 1
        self.incomplete += not x.complete
        events = self.events_of(x) if self.wants_events else None
        for sink in self.sinks:
            sink.write_exchange(x)
        if events is not None:
            self.events += len(events)
            self.write_events(x, events)

    def write_events(self, x: Exchange, events: list[dict]) -> None:
        for sink in self.sinks:
            sink.write_events(x, events)

    def close(self) -> list[str]:
        """Close every sink, in order; their pieces of the summary line."""
        return [piece for sink in self.sinks if (piece := sink.close())]

    def _connection_done(self, info: ConnectionInfo) -> None:
        for sink in self.sinks:
            sink.write_connection(info)
        if self.on_close is not None:
            self.on_close(info)
