"""The live analyzer's counters, its heartbeat, and the prometheus collector that serves them
(`--metrics-port`).

The heartbeat: the main loop calls `beat()` after every batch of rows, segment and checkpoint, and
`waiting()` before each idle wait. While it is not waiting (reading, writing, listing segments) and
has not beaten for `stall_seconds`, it is stalled (e.g. a parser spinning on one segment): /healthz
and /ready answer 503, so the kubelet restarts the container.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily


@dataclass
class FollowStats:
    segments_processed: int = 0
    segments_failed: int = 0  # set aside: reading or analyzing them raised (analyzer/live/follow.py)
    rows_read: int = 0
    exchanges: int = 0
    events_written: int = 0
    events_skipped: int = 0  # made again after a restart and found already written
    problems: int = 0  # unreadable segment files
    connections_lost: int = 0  # could not be rebuilt after a restart (their first segment was deleted)
    connections_dropped: int = 0  # open when a segment failed: ended early, unwritten exchanges lost
    parse_errors: int = 0  # connections whose parser raised, exchanges whose events could not be built
    output_rotations: int = 0
    open_connections: int = 0
    pending_segments: int = 0
    oldest_pending_mtime: float | None = None  # publication time of the oldest segment not yet read
    newest_segment_mtime: float | None = None
    ready: bool = False  # the restart's re-reading is done: new segments are being read
    otlp: object | None = None  # the OTLP exporter's ExportStats, when exporting
    stall_seconds: float = 300.0  # analyzer.stall_seconds
    busy: bool = True  # not in the idle wait: starting, re-reading, reading, writing
    last_progress: float = field(default_factory=time.monotonic)  # for stalled(): immune to clock steps
    last_progress_time: float = field(default_factory=time.time)  # the same moment, exported

    def beat(self) -> None:
        """Progress was made (called by the main loop only)."""
        self.last_progress, self.last_progress_time = time.monotonic(), time.time()

    def waiting(self) -> None:
        """The main loop is about to wait for new segments: caught up, so not stalled."""
        self.beat()
        self.busy = False

    def working(self) -> None:
        self.busy = True

    def stalled(self) -> bool:
        """Busy without progress for longer than stall_seconds."""
        return self.busy and time.monotonic() - self.last_progress > self.stall_seconds

    # the metrics endpoint's probes (contract/metrics_server.py): a stalled analyzer is neither
    def is_ready(self) -> bool:
        """/ready: the restart's re-reading is done and it is not stalled."""
        return self.ready and not self.stalled()

    def is_healthy(self) -> bool:
        """/healthz: not stalled."""
        return not self.stalled()


_COUNTERS = {
    "segments_processed": "segments read for the first time",
    "segments_failed": "segments set aside because reading or analyzing them raised",
    "rows_read": "segment rows read",
    "exchanges": "HTTP exchanges rebuilt",
    "events_written": "OISP events written to the output",
    "events_skipped": "events made again after a restart and not written, being there already",
    "problems": "segment files that could not be read",
    "connections_lost": "connections not rebuilt after a restart: a segment they needed was deleted",
    "connections_dropped": "connections ended early, open when a segment failed: unwritten exchanges lost",
    "output_rotations": "rotations of the events file",
    "parse_errors": "connections whose protocol parser raised and exchanges whose events could not be built "
                    "(each marked in the output; the run goes on)",
}


def _otlp_counters(o):
    for signal, exported, dropped in (("spans", o.spans_exported, o.spans_dropped),
                                      ("logs", o.logs_exported, o.logs_dropped)):
        family = CounterMetricFamily(f"oisp_analyzer_otlp_{signal}", f"OTLP {signal} by outcome: exported, "
                                     "or dropped (queue full, collector down or slow)", labels=["outcome"])
        family.add_metric(["exported"], exported)
        family.add_metric(["dropped"], dropped)
        yield family
    yield CounterMetricFamily("oisp_analyzer_otlp_metric_exports_failed", "OTLP metric exports that failed",
                              value=o.metric_exports_failed)


class FollowMetrics:
    """Reads FollowStats at scrape time (plain ints: consistent enough under the GIL)."""

    def __init__(self, stats: FollowStats):
        self.stats = stats

    def collect(self):
        s = self.stats
        for name, help_text in _COUNTERS.items():
            yield CounterMetricFamily(f"oisp_analyzer_{name}", help_text, value=getattr(s, name))
        now = time.time()
        lag = max(0.0, now - s.oldest_pending_mtime) if s.oldest_pending_mtime is not None else 0.0
        yield GaugeMetricFamily("oisp_analyzer_lag_seconds", "age of the oldest published segment not yet "
                                "read (0: caught up)", value=lag)
        if s.newest_segment_mtime is not None:
            yield GaugeMetricFamily("oisp_analyzer_newest_segment_age_seconds", "time since the newest "
                                    "segment was published", value=max(0.0, now - s.newest_segment_mtime))
        yield GaugeMetricFamily("oisp_analyzer_pending_segments", "published segments not yet read",
                                value=s.pending_segments)
        yield GaugeMetricFamily("oisp_analyzer_open_connections", "connections open in the analyzer",
                                value=s.open_connections)
        yield GaugeMetricFamily("oisp_analyzer_ready", "1 once the analyzer reads new segments",
                                value=int(s.ready))
        yield GaugeMetricFamily("oisp_analyzer_last_progress_timestamp_seconds", "when the analyzer last "
                                "made progress (a batch, a segment, caught up)", value=s.last_progress_time)
        yield GaugeMetricFamily("oisp_analyzer_stalled", "1 while busy without progress for longer than "
                                "analyzer.stall_seconds (/healthz answers 503)", value=int(s.stalled()))
        if s.otlp is not None:
            yield from _otlp_counters(s.otlp)

    def registry(self) -> CollectorRegistry:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(self)
        return registry
