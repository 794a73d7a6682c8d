"""A TCP proxy in front of an S3 server that damages the body of the next PUT it forwards, once:
- `cut`: forwards half of the body, then closes both connections (an upload cut halfway);
- `hold`: forwards half of the body, then waits until `release()` (a client killed mid-upload);
- `flip`: alters one byte in the middle of the body (a store that keeps what it was sent, altered).
Requests are read as HTTP/1.1 with a Content-Length (what botocore sends); the answers pass as they are.
`hit` is set once the fault is applied: the test's signal that the upload is halfway."""

from __future__ import annotations

import contextlib
import socket
import threading

FAULTS = ("cut", "hold", "flip")


class FaultProxy:
    def __init__(self, upstream_port: int):
        self.upstream = ("127.0.0.1", upstream_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.hit = threading.Event()
        self.puts = 0  # PUT requests seen
        self._fault: str | None = None
        self._released = threading.Event()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def arm(self, fault: str) -> None:
        assert fault in FAULTS
        with self._lock:
            self._fault = fault
        self.hit.clear()
        self._released.clear()

    def release(self) -> None:
        self._released.set()

    def close(self) -> None:
        self._released.set()
        self.listener.close()
        for s in self._sockets:
            with contextlib.suppress(OSError):
                s.close()

    def _take(self, method: bytes) -> str | None:
        if method != b"PUT":
            return None
        with self._lock:
            self.puts += 1
            fault, self._fault = self._fault, None
        return fault

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.upstream)
            self._sockets += [client, upstream]
            threading.Thread(target=self._requests, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._answers, args=(upstream, client), daemon=True).start()

    def _answers(self, upstream: socket.socket, client: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := upstream.recv(65536):
                client.sendall(data)
        with contextlib.suppress(OSError):
            client.shutdown(socket.SHUT_WR)

    def _requests(self, client: socket.socket, upstream: socket.socket) -> None:
        buf = b""
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    data = client.recv(65536)
                    if not data:
                        upstream.shutdown(socket.SHUT_WR)
                        return
                    buf += data
                head, buf = buf.split(b"\r\n\r\n", 1)
                upstream.sendall(head + b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                fault = self._take(head.split(b" ", 1)[0])
                buf = self._body(client, upstream, buf, length, fault)
                if buf is None:
                    return
        except OSError:
            pass
        finally:
            for s in (client, upstream):
                with contextlib.suppress(OSError):
                    s.close()

    def _body(self, client, upstream, buf: bytes, length: int, fault: str | None) -> bytes | None:
        """Forward `length` body bytes (applying the fault); what follows them, or None: closed."""
        sent, middle = 0, length // 2
        while sent < length:
            if not buf:
                buf = client.recv(65536)
                if not buf:
                    return None
            chunk, buf = buf[:length - sent], buf[length - sent:]
            if fault is not None and sent <= middle < sent + len(chunk):
                at = middle - sent
                if fault == "flip":
                    chunk = chunk[:at] + bytes([chunk[at] ^ 0xFF]) + chunk[at + 1:]
                else:
                    upstream.sendall(chunk[:at])
                    self.hit.set()
                    if fault == "hold":
                        self._released.wait()
                    return None  # both closed: the upload is cut halfway
                self.hit.set()
            upstream.sendall(chunk)
            sent += len(chunk)
        return buf
