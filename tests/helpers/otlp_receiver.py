"""A local OTLP receiver for tests, on the official opentelemetry-proto definitions: gRPC (the
TraceService, LogsService and MetricsService Export RPCs, served by grpcio) or HTTP/protobuf
(POST /v1/traces, /v1/logs, /v1/metrics on http.server). It keeps every request it acknowledges.

In the test process: `with Receiver("grpc") as r: ... r.wait(lambda: r.count("traces") >= 6)`.
As a process that can be killed (`python tests/helpers/otlp_receiver.py grpc DIR [--die-after N]`): it prints
`listening PORT` once it serves, writes each request it acknowledges to DIR as `<signal>-<n>.pb`
(before answering), and with --die-after N exits abruptly on request N+1 instead of answering it.
"""

from __future__ import annotations

import argparse
import gzip
import os
import sys
import threading
import zlib
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import grpc
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2 as logs_pb
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2_grpc as logs_grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2 as metrics_pb
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2_grpc as metrics_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as trace_pb
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as trace_grpc

# signal -> (request type, response type)
MESSAGES = {
    "traces": (trace_pb.ExportTraceServiceRequest, trace_pb.ExportTraceServiceResponse),
    "logs": (logs_pb.ExportLogsServiceRequest, logs_pb.ExportLogsServiceResponse),
    "metrics": (metrics_pb.ExportMetricsServiceRequest, metrics_pb.ExportMetricsServiceResponse),
}


class Receiver:
    def __init__(self, protocol: str, record_dir: Path | None = None, die_after: int | None = None):
        self.protocol = protocol
        self.record_dir = record_dir
        self.die_after = die_after
        self.requests: dict[str, list] = {s: [] for s in MESSAGES}
        self.headers: list[dict[str, str]] = []
        self._cond = threading.Condition()
        self._n = 0
        self.port = 0
        self._server = None

    # ---- what arrived ----------------------------------------------------------------------------
    def accept(self, signal: str, request, headers: dict[str, str]) -> None:
        with self._cond:
            self._n += 1
            if self.die_after is not None and self._n > self.die_after:
                os._exit(3)  # as a killed collector: no answer, connection gone
            if self.record_dir is not None:
                path = self.record_dir / f"{signal}-{self._n:04d}.pb"
                tmp = path.with_suffix(".tmp")
                tmp.write_bytes(request.SerializeToString())
                os.replace(tmp, path)
            self.requests[signal].append(request)
            self.headers.append(headers)
            self._cond.notify_all()

    def count(self, signal: str) -> int:
        """Spans, log records or metric data points received so far."""
        with self._cond:
            return sum(count_items(signal, r) for r in self.requests[signal])

    def wait(self, predicate, timeout: float = 30) -> None:
        with self._cond:
            if not self._cond.wait_for(predicate, timeout):
                raise AssertionError("the receiver did not get what was expected in time")

    # ---- serving ---------------------------------------------------------------------------------
    def start(self) -> int:
        if self.protocol == "grpc":
            self._server = _grpc_server(self)
        else:
            self._server = _http_server(self)
        return self.port

    def stop(self) -> None:
        if self.protocol == "grpc":
            self._server.stop(grace=None).wait()
        else:
            self._server.shutdown()
            self._server.server_close()

    def __enter__(self) -> Receiver:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def count_items(signal: str, request) -> int:
    if signal == "traces":
        return sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
    if signal == "logs":
        return sum(len(sl.log_records) for rl in request.resource_logs for sl in rl.scope_logs)
    return sum(len(m.histogram.data_points) + len(m.sum.data_points) + len(m.gauge.data_points)
               for rm in request.resource_metrics for sm in rm.scope_metrics for m in sm.metrics)


def _servicer(base, signal: str, receiver: Receiver):
    response = MESSAGES[signal][1]

    class Servicer(base):
        def Export(self, request, context):  # noqa: N802 (the RPC's name)
            receiver.accept(signal, request, dict(context.invocation_metadata()))
            return response()

    return Servicer()


def _grpc_server(receiver: Receiver):
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_grpc.add_TraceServiceServicer_to_server(
        _servicer(trace_grpc.TraceServiceServicer, "traces", receiver), server)
    logs_grpc.add_LogsServiceServicer_to_server(
        _servicer(logs_grpc.LogsServiceServicer, "logs", receiver), server)
    metrics_grpc.add_MetricsServiceServicer_to_server(
        _servicer(metrics_grpc.MetricsServiceServicer, "metrics", receiver), server)
    receiver.port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server


def _http_server(receiver: Receiver):
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's name)
            signal = self.path.removeprefix("/v1/")
            if signal not in MESSAGES:
                self.send_error(404)
                return
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            encoding = self.headers.get("Content-Encoding", "")
            if encoding == "gzip":
                body = gzip.decompress(body)
            elif encoding == "deflate":
                body = zlib.decompress(body)
            if self.headers.get("Content-Type") != "application/x-protobuf":
                self.send_error(415)
                return
            request = MESSAGES[signal][0]()
            request.ParseFromString(body)
            receiver.accept(signal, request, {k.lower(): v for k, v in self.headers.items()})
            out = MESSAGES[signal][1]().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    receiver.port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def read_recorded(directory: Path, signal: str) -> list:
    """The requests a receiver process acknowledged, in order."""
    out = []
    for path in sorted(directory.glob(f"{signal}-*.pb")):
        request = MESSAGES[signal][0]()
        request.ParseFromString(path.read_bytes())
        out.append(request)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("protocol", choices=["grpc", "http"])
    parser.add_argument("record_dir", type=Path)
    parser.add_argument("--die-after", type=int)
    args = parser.parse_args()
    receiver = Receiver(args.protocol, args.record_dir, args.die_after)
    port = receiver.start()
    print(f"listening {port}", flush=True)
    threading.Event().wait()  # until killed
    sys.exit(0)


if __name__ == "__main__":
    main()
