"""The metrics endpoint both programs serve (`--metrics-port`): `/metrics` in the Prometheus text
format, `/ready` (200 once the program is ready, else 503: a readiness probe) and `/healthz` (a liveness
probe: 200 while `healthy()` says so, else 503; by default healthy while the process serves)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest


class MetricsServer:
    """Serves one registry from a daemon thread until close()."""

    def __init__(self, address: str, port: int, registry: CollectorRegistry,
                 ready: Callable[[], bool] = lambda: True, healthy: Callable[[], bool] = lambda: True):
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (the http.server name)
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
                elif path == "/ready":
                    ok = ready()
                    self._send(200 if ok else 503, b"ready\n" if ok else b"not ready\n")
                elif path == "/healthz":
                    ok = healthy()
                    self._send(200 if ok else 503, b"ok\n" if ok else b"unhealthy\n")
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
