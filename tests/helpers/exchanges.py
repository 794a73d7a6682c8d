"""Hand-built exchanges for the AI layer's tests: one HTTP/1.1 call on a connection of a fake process,
with a canary API key in its Authorization header."""

from __future__ import annotations

import json

from analyzer.ai.providers import ProviderRegistry
from analyzer.model import ConnectionInfo, Exchange, HttpMessage

REG = ProviderRegistry()
KEY = "sk-proj-CANARY1234567890abcdefghij"


def exchange(authority, path, req: dict, resp: bytes, ctype="application/json", status=200, headers=()):
    conn = ConnectionInfo("node-1", "42-abc-7", 42, 42, "agent", 1000, 5, "/lib/libssl.so.3",
                          seen_from_start=True)
    x = Exchange(conn, "1.1", 1, method="POST", authority=authority, path=path, status=status)
    x.request = HttpMessage(headers=[("host", authority), ("authorization", f"Bearer {KEY}"), *headers],
                            body=bytearray(json.dumps(req).encode()), start_ns=1_700_000_000_000_000_000,
                            end_ns=1_700_000_000_001_000_000, complete=True)
    x.response = HttpMessage(headers=[("content-type", ctype)], body=bytearray(resp),
                             start_ns=1_700_000_000_200_000_000, end_ns=1_700_000_001_500_000_000,
                             complete=True)
    return x
