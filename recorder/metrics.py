"""Prometheus metrics over HTTP (`--metrics-port`), for the recorder and, imported from here, the
analyzer: `/metrics` in the Prometheus text format, `/ready` (200 once the program is ready, else
503: a readiness probe) and `/healthz` (200 while the process serves: a liveness probe).

No bcc here: the analyzer imports this module too.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest


class MetricsServer:
    """Serves one registry from a daemon thread until close()."""

    def __init__(self, address: str, port: int, registry: CollectorRegistry,
                 ready: Callable[[], bool] = lambda: True):
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (the http.server name)
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
                elif path == "/ready":
                    ok = ready()
                    self._send(200 if ok else 503, b"ready\n" if ok else b"not ready\n")
                elif path == "/healthz":
                    self._send(200, b"ok\n")
                else:
                    self._send(404, b"not found: /metrics, /ready, /healthz\n")

            def _send(self, code: int, body: bytes, ctype: str = "text/plain; charset=utf-8"):
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):  # scrapes every few seconds would flood the log
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            address_family = socket.AF_INET6 if ":" in address else socket.AF_INET

        self.httpd = Server((address, port), Handler)
        self.port = self.httpd.server_address[1]  # the one bound, when port 0 asked for any
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="metrics", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def directory_bytes(path: Path) -> int:
    """Bytes of the regular files directly in a directory (segments, in-progress streams, leftovers)."""
    total = 0
    try:
        with os.scandir(path) as it:
            for entry in it:
                try:
                    if entry.is_file(follow_symlinks=False):
                        total += entry.stat(follow_symlinks=False).st_size
                except FileNotFoundError:
                    pass  # published, converted or deleted meanwhile
    except FileNotFoundError:
        return 0
    return total


# The recorder's running totals (run.py totals(), logged as `totals {...}`), each a counter.
_HELP = {
    "records": "records written to the ring buffer by the probes",
    "bytes": "plaintext bytes written to the ring buffer",
    "calls": "TLS calls that moved bytes",
    "dropped_records": "records lost because the ring buffer was full",
    "dropped_bytes": "bytes lost because the ring buffer was full",
    "truncated_bytes": "bytes over the per-call capture limit (recorded as gaps)",
    "fault_bytes": "bytes the kernel could not read from the application",
    "unexplained_gap_bytes": "offset jumps found in user space",
    "malformed_records": "ring-buffer records that could not be decoded",
    "rows_written": "rows written to the in-progress segment",
    "segments_written": "segments closed",
    "segments_published": "segments converted to Parquet and published",
    "write_failed_batches": "batches dropped because the disk refused them",
    "write_failed_rows": "rows dropped because the disk refused them",
    "write_failed_bytes": "Arrow bytes dropped because the disk refused them",
    "quota_deleted_segments": "segments deleted for the quota or a full disk",
    "quota_deleted_bytes": "bytes of segments deleted for the quota or a full disk",
}


class RecorderMetrics:
    """A prometheus collector over snapshots the recorder's main loop hands it (update()), so that a
    scrape never reads BPF maps from the server's thread."""

    def __init__(self, segments_dir: Path):
        self.segments_dir = segments_dir
        self.totals: dict[str, int] = {}
        self.libraries = 0
        self.ready = False

    def update(self, totals: dict[str, int], libraries: int) -> None:
        self.totals = dict(totals)
        self.libraries = libraries

    def collect(self):
        for name, value in sorted(self.totals.items()):
            yield CounterMetricFamily(f"oisp_recorder_{name}", _HELP.get(name, name.replace("_", " ")),
                                      value=value)
        yield GaugeMetricFamily("oisp_recorder_ready", "1 once every probe is attached, 0 before and "
                                "while stopping", value=int(self.ready))
        yield GaugeMetricFamily("oisp_recorder_libraries_probed", "TLS library files with probes attached",
                                value=self.libraries)
        yield GaugeMetricFamily("oisp_recorder_segments_dir_bytes", "bytes of the files in the segments "
                                "directory (published and in progress)",
                                value=directory_bytes(self.segments_dir))

    def registry(self) -> CollectorRegistry:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(self)
        return registry
