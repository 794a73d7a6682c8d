"""Ground truth from the server's side: every request a fake provider received and every response it
sent, byte-exact, as JSON lines (bodies base64), written by an ASGI middleware.

The end-to-end tests compare what the analyzer rebuilt from the capture with this log and with what
the clients themselves saw.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from pathlib import Path


class GroundTruthLog:
    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.Lock()
        path.write_text("")

    def write(self, entry: dict) -> None:
        line = json.dumps(entry, sort_keys=True) + "\n"
        with self._lock, self.path.open("a") as f:
            f.write(line)

    def entries(self) -> list[dict]:
        return [json.loads(line) for line in self.path.read_text().splitlines()]


def recording(app, log: GroundTruthLog):
    """Wrap an ASGI app so that each HTTP exchange is logged once its response is complete."""

    async def wrapped(scope, receive, send):
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        request = bytearray()
        response = bytearray()
        status: list[int] = []
        headers: list[list[str]] = []
        started = time.time_ns()

        async def receive_logged():
            msg = await receive()
            if msg["type"] == "http.request":
                request.extend(msg.get("body", b""))
            return msg

        async def send_logged(msg):
            if msg["type"] == "http.response.start":
                status.append(msg["status"])
                headers.extend([k.decode("latin-1"), v.decode("latin-1")] for k, v in msg.get("headers", []))
            elif msg["type"] == "http.response.body":
                response.extend(msg.get("body", b""))
                if not msg.get("more_body"):
                    log.write({
                        "http_version": scope.get("http_version"),
                        "method": scope["method"],
                        "host": dict(scope["headers"]).get(b"host", b"").decode()
                        or dict(scope["headers"]).get(b":authority", b"").decode(),
                        "path": scope["path"], "query": scope["query_string"].decode(),
                        "request_headers": [[k.decode("latin-1"), v.decode("latin-1")]
                                            for k, v in scope["headers"]],
                        "request_body": base64.b64encode(bytes(request)).decode(),
                        "status": status[0] if status else None, "response_headers": headers,
                        "response_body": base64.b64encode(bytes(response)).decode(),
                        "started_ns": started, "ended_ns": time.time_ns(),
                        "client": list(scope.get("client") or []),
                    })
            await send(msg)

        await app(scope, receive_logged, send_logged)

    return wrapped
