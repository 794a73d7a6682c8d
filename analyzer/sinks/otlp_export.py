"""Export AI calls to an OpenTelemetry collector over OTLP (gRPC or HTTP/protobuf), with the official
OpenTelemetry Python exporters: spans and log records (analyzer/sinks/otel_mapping.py makes them) through
our own bounded queue and worker thread, the two GenAI histograms through the SDK's meter.

A collector that is down or slow must never hold up or break the analysis, which writes the events
file whatever happens here. So `submit` never blocks: a call that finds the queue full is dropped and
counted. The worker sends batches; a batch that fails (after the exporter's own retries within its
timeout) is tried again after a backoff, then dropped and counted. At the end, `close` gives the queue
`flush_timeout_seconds` to drain, then counts whatever is left as dropped. Each drop is in the stats,
the summary line of the run, and a warning (the first of a series, then every 30 s at most).
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
import time
from dataclasses import dataclass, field
from functools import lru_cache

from opentelemetry._logs import LogRecord, SeverityNumber
from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags, set_span_in_context
from opentelemetry.trace.status import Status, StatusCode

from analyzer.model import Exchange
from analyzer.sinks.otel_mapping import (
    SCOPE_NAME,
    SCOPE_VERSION,
    CallTelemetry,
    LogData,
    SpanData,
    map_call,
    pair_events,
)
from analyzer.sinks.otlp_settings import OtlpSettings
from analyzer.sinks.sink import Sink

log = logging.getLogger("oisp.analyze")

# the convention's advised bucket boundaries
TOKEN_BUCKETS = [1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864]
DURATION_BUCKETS = [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92]
_MAX_BACKOFF = 30.0
_WARN_EVERY = 30.0
_SCOPE = InstrumentationScope(SCOPE_NAME, SCOPE_VERSION)
_SEVERITY = {"INFO": SeverityNumber.INFO, "WARN": SeverityNumber.WARN}
_STOP = object()


@dataclass
class ExportStats:
    calls_submitted: int = 0
    spans_submitted: int = 0
    logs_submitted: int = 0
    spans_exported: int = 0
    spans_dropped: int = 0
    logs_exported: int = 0
    logs_dropped: int = 0
    queue_full_drops: int = 0  # calls dropped because the queue was full (their spans and logs counted)
    metric_exports: int = 0
    metric_exports_failed: int = 0
    last_error: str | None = field(default=None, repr=False)

    @property
    def dropped(self) -> int:
        return self.spans_dropped + self.logs_dropped + self.metric_exports_failed

    def summary(self) -> str:
        full = f" ({self.queue_full_drops} call(s) found the queue full)" if self.queue_full_drops else ""
        return (f"OTLP: {self.spans_exported} span(s), {self.logs_exported} log record(s) exported, "
                f"{self.spans_dropped} span(s), {self.logs_dropped} log record(s) dropped{full}, "
                f"{self.metric_exports_failed} of {self.metric_exports} metric export(s) failed")


class _LastError(logging.Handler):
    """Keeps the exporters' last error message (they log it; we report it once, with our counts),
    scrubbed of the endpoint's credentials and headers (OtlpSettings.scrub): it may quote the URL."""

    def __init__(self, stats: ExportStats, settings: OtlpSettings):
        super().__init__(logging.WARNING)
        self.stats = stats
        self.settings = settings

    def emit(self, record: logging.LogRecord) -> None:
        self.stats.last_error = self.settings.scrub(record.getMessage())[:300]


def _quiet_exporter_logs(stats: ExportStats, settings: OtlpSettings) -> None:
    # The exporters log every failed attempt; a collector down for an hour would flood the log. Their
    # messages are kept for ours instead (see _Channel._warn).
    for name in ("opentelemetry.exporter.otlp", "opentelemetry.exporter.http",
                 "opentelemetry.sdk.metrics._internal.export", "opentelemetry.sdk.metrics"):
        lg = logging.getLogger(name)
        others = [h for h in lg.handlers if not isinstance(h, _LastError)]
        lg.handlers = [*others, _LastError(stats, settings)]
        lg.propagate = False


def _ca(settings: OtlpSettings):
    import grpc

    if settings.ca_file is None:
        return None
    with open(settings.ca_file, "rb") as f:
        return grpc.ssl_channel_credentials(root_certificates=f.read())


def make_exporters(settings: OtlpSettings):
    """The official exporters (span, log, metric) for the settings' protocol."""
    common = {"headers": settings.headers or None, "timeout": settings.timeout_seconds}
    if settings.protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        grpc_args = {"endpoint": settings.grpc_target(), "insecure": settings.plaintext,
                     "credentials": None if settings.plaintext else _ca(settings), **common}
        return OTLPSpanExporter(**grpc_args), OTLPLogExporter(**grpc_args), OTLPMetricExporter(**grpc_args)
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    http_args = {"certificate_file": settings.ca_file, **common}
    return (OTLPSpanExporter(endpoint=settings.http_url("traces"), **http_args),
            OTLPLogExporter(endpoint=settings.http_url("logs"), **http_args),
            OTLPMetricExporter(endpoint=settings.http_url("metrics"), **http_args))


@lru_cache(maxsize=4096)
def _resource(items: tuple) -> Resource:
    return Resource(dict(items))


def _context(trace_id: int, span_id: int) -> SpanContext:
    return SpanContext(trace_id, span_id, is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED))


def to_sdk_span(s: SpanData) -> ReadableSpan:
    status = Status(StatusCode.ERROR, s.error) if s.error is not None else Status(StatusCode.UNSET)
    return ReadableSpan(name=s.name, context=_context(s.trace_id, s.span_id), kind=SpanKind.CLIENT,
                        resource=_resource(tuple(sorted(s.resource.items(), key=lambda kv: kv[0]))),
                        attributes=s.attributes, status=status, start_time=s.start_ns, end_time=s.end_ns,
                        instrumentation_scope=_SCOPE)


def to_sdk_log(d: LogData) -> ReadableLogRecord:
    ctx = set_span_in_context(NonRecordingSpan(_context(d.trace_id, d.span_id)))
    record = LogRecord(timestamp=d.timestamp_ns, observed_timestamp=d.timestamp_ns, context=ctx,
                       severity_text=d.severity, severity_number=_SEVERITY[d.severity], body=d.body,
                       attributes=d.attributes, event_name=d.event_name)
    return ReadableLogRecord(log_record=record,
                             resource=_resource(tuple(sorted(d.resource.items(), key=lambda kv: kv[0]))),
                             instrumentation_scope=_SCOPE)


class _CountingMetricExporter(MetricExporter):
    """The metric exporter, counting its exports and failures (the SDK's reader does not)."""

    def __init__(self, inner: MetricExporter, stats: ExportStats, settings: OtlpSettings):
        super().__init__(preferred_temporality=inner._preferred_temporality,
                         preferred_aggregation=inner._preferred_aggregation)
        self.inner = inner
        self.stats = stats
        self.settings = settings

    def export(self, metrics_data, timeout_millis: float = 10_000, **kwargs) -> MetricExportResult:
        try:
            result = self.inner.export(metrics_data, timeout_millis=timeout_millis, **kwargs)
        except Exception as exc:  # an exporter bug must not end the reader's thread
            self.stats.last_error = self.settings.scrub(str(exc))
            result = MetricExportResult.FAILURE
        self.stats.metric_exports += 1
        if result is not MetricExportResult.SUCCESS:
            self.stats.metric_exports_failed += 1
            log.warning("OTLP metrics export failed (%s)", self.stats.last_error or "no detail")
        return result

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return self.inner.force_flush(timeout_millis=timeout_millis)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs) -> None:
        self.inner.shutdown(timeout_millis=timeout_millis)


class OtlpExporter:
    """Hand it the events of each exchange (`submit`); `close` at the end. Thread-safe for one producer."""

    def __init__(self, settings: OtlpSettings, capture_content: bool, exporters=None):
        self.settings = settings
        self.capture_content = capture_content
        self.stats = ExportStats()
        _quiet_exporter_logs(self.stats, settings)
        span_exp, log_exp, metric_exp = exporters or make_exporters(settings)
        self._exporters = {"traces": span_exp if "traces" in settings.signals else None,
                           "logs": log_exp if "logs" in settings.signals else None}
        self._queue: queue.Queue = queue.Queue(maxsize=settings.queue_size)
        self._lock = threading.Lock()  # the counters: both threads add to them
        self._deadline: float | None = None  # set by close: no retry, no export after it
        self._closing = threading.Event()
        self._last_warning = float("-inf")
        self._failing: set[str] = set()
        self._meter_provider = None
        self._histograms = {}
        if "metrics" in settings.signals:
            self._start_metrics(metric_exp)
        else:
            metric_exp.shutdown()
        self._worker = threading.Thread(target=self._run, name="otlp-export", daemon=True)
        self._worker.start()

    # ---- producer side (the analysis thread) --------------------------------------------------------
    def submit(self, events: list[dict]) -> None:
        """The events of one exchange (an ai.request and maybe its ai.response). Never blocks."""
        for request, response in pair_events(events):
            try:
                call = map_call(request, response, self.capture_content)
            except Exception as exc:  # a mapping bug costs the export of this call, not the analysis
                with self._lock:
                    self.stats.calls_submitted += 1
                    self.stats.spans_submitted += self._exporters["traces"] is not None
                    self._count_dropped("traces", 1)
                self._warn(f"could not map event {request.get('event_id')} ({exc!r})")
                continue
            self.submit_call(call)

    def submit_call(self, call: CallTelemetry) -> None:
        with self._lock:
            self.stats.calls_submitted += 1
            if self._exporters["traces"] is not None:
                self.stats.spans_submitted += 1
            if self._exporters["logs"] is not None:
                self.stats.logs_submitted += len(call.logs)
        # metrics are aggregated here, in memory: they do not wait for the queue, and are never dropped
        for point in call.metrics:
            histogram = self._histograms.get(point.instrument)
            if histogram is not None:
                histogram.record(point.value, point.attributes)
        try:
            self._queue.put_nowait(call)
        except queue.Full:
            with self._lock:
                self.stats.queue_full_drops += 1
                self._count_dropped("traces", 1)
                self._count_dropped("logs", len(call.logs))
            self._warn(f"export queue full ({self.settings.queue_size} calls): the collector is down or slow")

    # ---- worker ------------------------------------------------------------------------------------
    def _run(self) -> None:
        stopping = False
        while not stopping:
            item = self._queue.get()
            batch = []
            while True:
                if item is _STOP:
                    stopping = True
                    break
                batch.append(item)
                if len(batch) >= self.settings.batch_size:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            if batch:
                try:
                    self._export_batch(batch)
                except Exception as exc:  # a bug here must not stop the worker (close would wait)
                    self._warn(f"export failed unexpectedly ({exc!r})")  # close() counts the batch

    def _export_batch(self, batch: list[CallTelemetry]) -> None:
        spans = [to_sdk_span(c.span) for c in batch]
        logs = [to_sdk_log(d) for c in batch for d in c.logs]
        self._deliver("traces", spans)
        self._deliver("logs", logs)

    def _deliver(self, signal: str, items: list) -> None:
        exporter = self._exporters[signal]
        if exporter is None or not items:
            return
        backoff = self.settings.retry_backoff_seconds
        for attempt in range(self.settings.retries + 1):
            if self._past_deadline():
                break
            try:
                ok = exporter.export(items).name == "SUCCESS"
            except Exception as exc:  # an exporter bug must not end the worker
                self.stats.last_error = self.settings.scrub(str(exc))
                ok = False
            if ok:
                with self._lock:
                    self._count_exported(signal, len(items))
                if signal in self._failing:
                    self._failing.discard(signal)
                    log.info("OTLP %s export to %s works again", signal, self.settings.describe())
                return
            self._failing.add(signal)
            if attempt < self.settings.retries:
                wait = min(backoff, _MAX_BACKOFF)
                if self._deadline is None:
                    self._closing.wait(wait)  # close() cuts the wait short
                else:
                    time.sleep(min(wait, max(0.0, self._deadline - time.monotonic())))
                backoff *= 2
        with self._lock:
            self._count_dropped(signal, len(items))
        self._warn(f"{signal} export to {self.settings.describe()} failed "
                   f"({self.stats.last_error or 'no detail'})")

    def _past_deadline(self) -> bool:
        return self._deadline is not None and time.monotonic() >= self._deadline

    def _count_exported(self, signal: str, n: int) -> None:
        if signal == "traces":
            self.stats.spans_exported += n
        else:
            self.stats.logs_exported += n

    def _count_dropped(self, signal: str, n: int) -> None:
        if self._exporters.get(signal) is None:
            return
        if signal == "traces":
            self.stats.spans_dropped += n
        else:
            self.stats.logs_dropped += n

    def _warn(self, what: str) -> None:
        now = time.monotonic()
        if now - self._last_warning >= _WARN_EVERY:
            self._last_warning = now
            s = self.stats
            # `what` may quote an exception on captured text, or the exporter's message with the URL
            log.warning("OTLP %s; dropped so far: %d span(s), %d log record(s)", self.settings.scrub(what),
                        s.spans_dropped, s.logs_dropped)

    # ---- metrics -----------------------------------------------------------------------------------
    def _start_metrics(self, metric_exp) -> None:
        node = os.environ.get("NODE_NAME") or socket.gethostname()
        resource = Resource.create({"service.name": SCOPE_NAME, "service.version": SCOPE_VERSION,
                                    "host.name": node})
        # cumulative temporality (the exporters' default): each export holds the totals so far, so a
        # failed one loses nothing as long as a later one gets through; the last is sent at close
        interval = self.settings.metrics_interval_seconds * 1000
        reader = PeriodicExportingMetricReader(_CountingMetricExporter(metric_exp, self.stats, self.settings),
                                               export_interval_millis=interval,
                                               export_timeout_millis=self.settings.timeout_seconds * 1000)
        self._meter_provider = MeterProvider(resource=resource, metric_readers=[reader])
        meter = self._meter_provider.get_meter(SCOPE_NAME, SCOPE_VERSION)
        names = self.settings.metric_names
        self._histograms = {
            "token_usage": meter.create_histogram(names["token_usage"], unit="{token}",
                                                  description="Number of input and output tokens used.",
                                                  explicit_bucket_boundaries_advisory=TOKEN_BUCKETS),
            "operation_duration": meter.create_histogram(names["operation_duration"], unit="s",
                                                         description="GenAI operation duration.",
                                                         explicit_bucket_boundaries_advisory=DURATION_BUCKETS),
        }

    # ---- end ---------------------------------------------------------------------------------------
    def close(self) -> ExportStats:
        """Deliver what is queued within flush_timeout_seconds (the collector down: drop it sooner),
        send the metrics once more, stop. Counts what could not be delivered. Returns the stats."""
        t = self.settings
        self._deadline = time.monotonic() + t.flush_timeout_seconds
        self._closing.set()
        # the queue may be full: the sentinel waits for room, until the deadline
        try:
            self._queue.put(_STOP, timeout=t.flush_timeout_seconds)
        except queue.Full:
            pass
        # past the deadline the worker drops instead of exporting, so it empties the queue at once; but
        # an export in flight may take its whole timeout
        self._worker.join(max(0.0, self._deadline - time.monotonic()) + t.timeout_seconds + 1)
        for exporter in self._exporters.values():
            if exporter is not None:
                exporter.shutdown()
        if self._meter_provider is not None:
            self._meter_provider.shutdown(timeout_millis=t.timeout_seconds * 1000 + 1000)
        # what was neither exported nor dropped yet (still queued, or in an export that did not
        # return in time) is lost now
        s = self.stats
        with self._lock:
            lost_spans = s.spans_submitted - s.spans_exported - s.spans_dropped
            lost_logs = s.logs_submitted - s.logs_exported - s.logs_dropped
            s.spans_dropped += lost_spans
            s.logs_dropped += lost_logs
        if lost_spans or lost_logs:
            log.warning("OTLP: %d span(s), %d log record(s) not delivered within flush_timeout_seconds "
                        "(%s s)", lost_spans, lost_logs, t.flush_timeout_seconds)
        if s.dropped:
            log.warning("%s", s.summary())
        return s


class OtlpSink(Sink):
    """The exporter as a sink of the pipeline (analyzer/pipeline.py): the events of each AI call go out."""

    wants_events = True

    def __init__(self, settings: OtlpSettings, capture_content: bool):
        self.exporter = OtlpExporter(settings, capture_content=capture_content)

    @property
    def stats(self) -> ExportStats:
        return self.exporter.stats

    def write_events(self, x: Exchange, events: list[dict]) -> None:
        if events:
            self.exporter.submit(events)  # never blocks: a collector down or slow drops calls, counted

    def close(self) -> str:
        return self.exporter.close().summary()
