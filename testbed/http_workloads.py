"""Client workloads for the analyzer's fixtures: real httpx clients (HTTP/1.1 and HTTP/2).

usage: python -m testbed.http_workloads NAME URL CA_FILE
Waits for a line on stdin before starting (so a recorder can be told its pid first), then prints
a JSON summary of what it did.
"""

from __future__ import annotations

import asyncio
import json
import sys

import httpx


def h1(url: str, ca: str) -> dict:
    """Keep-alive HTTP/1.1: JSON, gzip, chunked, SSE and a large body on one connection."""
    out = []
    with httpx.Client(http2=False, verify=ca, base_url=url) as client:
        out.append(client.post("/echo", json={"model": "m", "messages": [{"role": "user", "content": "hi"}]}))
        out.append(client.get("/gzip"))
        out.append(client.get("/chunked"))
        out.append(client.get("/sse", params={"n": 8}))
        out.append(client.post("/echo", content=b"u" * 300_000))
        out.append(client.get("/big", params={"n": 1 << 20}))
        out.append(client.get("/missing"))
    return {"statuses": [r.status_code for r in out], "versions": sorted({r.http_version for r in out})}


async def _h2(url: str, ca: str) -> dict:
    async with httpx.AsyncClient(http2=True, verify=ca, base_url=url) as client:
        first = await client.get("/echo")  # opens the connection, so all below share it
        many = await asyncio.gather(
            *(client.get("/sse", params={"n": 3 + i % 5, "delay_ms": 20}) for i in range(24)))
        big = await client.get("/big", params={"n": 1 << 20})
        up = await client.post("/echo", content=b"v" * 300_000)
        gz = await client.get("/gzip")
    rs = [first, *many, big, up, gz]
    return {"statuses": [r.status_code for r in rs], "versions": sorted({r.http_version for r in rs})}


def h2(url: str, ca: str) -> dict:
    """HTTP/2: 24 concurrent SSE streams multiplexed on one connection, large bodies both ways."""
    return asyncio.run(_h2(url, ca))


WORKLOADS = {"h1": h1, "h2": h2}

if __name__ == "__main__":
    name, url, ca = sys.argv[1:4]
    print(json.dumps({"ready": True}), flush=True)
    sys.stdin.readline()
    print(json.dumps(WORKLOADS[name](url, ca)), flush=True)
