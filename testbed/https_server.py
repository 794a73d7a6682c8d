"""A small threaded HTTPS/1.1 server on loopback, built on Python's ssl (so it is probed too).

It answers every request with a body that is a function of the request, and records what it
received and sent, byte for byte, so tests can compare the capture with the ground truth.
"""

from __future__ import annotations

import socket
import ssl
import threading
from dataclasses import dataclass, field


@dataclass
class Exchange:
    request: bytes
    response: bytes


@dataclass
class HttpsServer:
    context: ssl.SSLContext
    body_for: object = None  # callable(path: str, body: bytes) -> bytes; default echoes the path
    host: str = "127.0.0.1"
    port: int = 0
    exchanges: list[Exchange] = field(default_factory=list)

    def __post_init__(self):
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((self.host, self.port))
        self._sock.listen(64)
        self.port = self._sock.getsockname()[1]
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._accept = threading.Thread(target=self._accept_loop, daemon=True)
        self._accept.start()

    @property
    def url(self) -> str:
        return f"https://localhost:{self.port}"

    def _accept_loop(self) -> None:
        while True:
            try:
                raw, _ = self._sock.accept()
            except OSError:
                return
            t = threading.Thread(target=self._serve, args=(raw,), daemon=True)
            t.start()
            self._threads.append(t)

    def _serve(self, raw: socket.socket) -> None:
        try:
            conn = self.context.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError):
            raw.close()
            return
        buf = b""
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                head, _, rest = buf.partition(b"\r\n\r\n")
                lines = head.split(b"\r\n")
                method, path, _version = lines[0].split(b" ", 2)
                headers = {k.strip().lower(): v.strip() for k, v in (ln.split(b":", 1) for ln in lines[1:])}
                length = int(headers.get(b"content-length", b"0"))
                while len(rest) < length:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    rest += chunk
                body, buf = rest[:length], rest[length:]
                reply = self.body_for(path.decode(), body) if self.body_for else b"you asked for " + path
                close = headers.get(b"connection", b"").lower() == b"close"
                response = (
                    b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n"
                    + b"content-length: %d\r\n" % len(reply)
                    + (b"connection: close\r\n" if close else b"")
                    + b"\r\n"
                    + reply
                )
                conn.sendall(response)
                with self._lock:
                    self.exchanges.append(Exchange(head + b"\r\n\r\n" + body, response))
                if close or method == b"CLOSE":
                    return
        except (ssl.SSLError, OSError, ValueError):
            return
        finally:
            try:
                conn.close()
            except OSError:
                pass

    def close(self) -> None:
        self._sock.close()
        for t in self._threads:
            t.join(timeout=5)
