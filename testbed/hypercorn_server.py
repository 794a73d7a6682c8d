"""Run testbed.asgi_app under hypercorn on loopback, in a background thread: with TLS, or plaintext
(HTTP/1.1, and HTTP/2 by prior knowledge: h2c) when given no PKI."""

from __future__ import annotations

import asyncio
import socket
import threading
from pathlib import Path

from hypercorn.asyncio import serve
from hypercorn.config import Config

from .asgi_app import app
from .pki import TestPKI


class HypercornServer:
    def __init__(self, pki: TestPKI | None, workdir: Path, app=app, port: int = 0,
                 extra_ports: tuple[int, ...] = (), keep_alive_seconds: float = 5.0, host: str = "127.0.0.1"):
        if not port:
            sock = socket.socket()
            sock.bind((host, 0))
            port = sock.getsockname()[1]
            sock.close()
        self.port = port
        self.app = app
        self.config = Config()
        self.host = host  # another loopback address lets two servers on port 443 run side by side
        self.config.bind = [f"{host}:{p}" for p in (self.port, *extra_ports)]
        self.tls = pki is not None
        if pki is not None:
            cert, key = workdir / "server.pem", workdir / "server.key"
            pki.cert.private_key_pem.write_to_path(str(key))
            pki.cert.cert_chain_pems[0].write_to_path(str(cert))
            self.config.certfile, self.config.keyfile = str(cert), str(key)
            self.config.alpn_protocols = ["h2", "http/1.1"]
        self.config.loglevel = "WARNING"
        self.config.keep_alive_timeout = keep_alive_seconds
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("hypercorn did not start")

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{'localhost' if self.tls else self.host}:{self.port}"

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._stop = asyncio.Event()

        async def main():
            task = asyncio.ensure_future(serve(self.app, self.config, shutdown_trigger=self._stop.wait))
            while True:  # ready once the port accepts connections
                try:
                    _, w = await asyncio.open_connection(self.host, self.port)
                    w.close()
                    break
                except OSError:
                    await asyncio.sleep(0.02)
            self._ready.set()
            await task

        loop.run_until_complete(main())

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=10)
