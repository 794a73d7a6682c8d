"""An ASGI app with the response shapes the analyzer must handle, served by hypercorn over TLS
(HTTP/1.1 and HTTP/2 by ALPN): JSON, gzip, chunked streaming, server-sent events, large bodies."""

from __future__ import annotations

import asyncio
import gzip
import json
from urllib.parse import parse_qs


async def read_body(receive) -> bytes:
    body = b""
    while True:
        msg = await receive()
        body += msg.get("body", b"")
        if not msg.get("more_body"):
            return body


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    path = scope["path"]
    query = {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}
    body = await read_body(receive)

    delay = int(query.get("delay_ms", "0")) / 1000  # between body parts: keeps streams open longer

    async def respond(status: int, headers: list[tuple[bytes, bytes]], *parts: bytes) -> None:
        await send({"type": "http.response.start", "status": status, "headers": headers})
        for i, part in enumerate(parts):
            if delay and i:
                await asyncio.sleep(delay)
            await send({"type": "http.response.body", "body": part, "more_body": i < len(parts) - 1})
        if not parts:
            await send({"type": "http.response.body", "body": b""})

    if path == "/echo":
        data = json.dumps({"method": scope["method"], "received": len(body),
                           "sha": __import__("hashlib").sha256(body).hexdigest()}).encode()
        await respond(200, [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(data))],
                      data)
    elif path == "/gzip":
        data = gzip.compress(json.dumps({"text": "compressed " * 200}).encode())
        await respond(200, [(b"content-type", b"application/json"), (b"content-encoding", b"gzip")], data)
    elif path == "/chunked":
        await respond(200, [(b"content-type", b"text/plain")], *[b"part %d;" % i for i in range(10)])
    elif path == "/sse":
        n = int(query.get("n", "5"))
        events = [b"event: delta\ndata: {\"i\": %d, \"text\": \"token %d\"}\n\n" % (i, i) for i in range(n)]
        events.insert(1, b"data: a line with [DONE] inside\ndata: and a second line\n\n")
        events.append(b"data: [DONE]\n\n")
        await respond(200, [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")],
                      *events)
    elif path == "/big":
        n = int(query.get("n", str(1 << 20)))
        piece = bytes(range(256)) * 256
        parts = [piece[: min(len(piece), n - off)] for off in range(0, n, len(piece))]
        await respond(200, [(b"content-type", b"application/octet-stream"),
                            (b"content-length", b"%d" % n)], *parts)
    else:
        await respond(404, [(b"content-type", b"text/plain"), (b"content-length", b"9")], b"not found")
