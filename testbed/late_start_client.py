"""Connections opened before the recorder starts: an httpx client over HTTP/2 and one over HTTP/1.1
keep-alive each make a call, wait for a line on stdin (the recorder is started meanwhile), then make
two more calls on the same connections. Prints the markers of the later calls as JSON.

Run like testbed/e2e_workload.py: api.openai.com resolving to the fake providers, SSL_CERT_FILE set.
"""

from __future__ import annotations

import json
import os
import sys

import httpx

KEY = "sk-proj-LATEcanaryLATEcanary0123456789"


def chat(client: httpx.Client, marker: str, stream: bool) -> str:
    body = {"model": "gpt-4o-mini", "stream": stream,
            "messages": [{"role": "user", "content": f"{marker} What does the fake provider say?"}]}
    r = client.post("https://api.openai.com/v1/chat/completions", json=body,
                    headers={"authorization": f"Bearer {KEY}"})
    r.raise_for_status()
    return r.http_version


def main() -> None:
    verify = os.environ["SSL_CERT_FILE"]
    # httpx closes connections idle for 5 s by default: longer than the recorder takes to start
    limits = httpx.Limits(keepalive_expiry=300)
    h2 = httpx.Client(http2=True, verify=verify, limits=limits)
    h1 = httpx.Client(http2=False, verify=verify, limits=limits)
    versions = {chat(h2, "[late-h2-0]", False), chat(h1, "[late-h1-0]", False)}
    print(json.dumps({"ready": True, "versions": sorted(versions)}), flush=True)
    sys.stdin.readline()
    later = []
    for i in (1, 2):
        for client, name in ((h2, "h2"), (h1, "h1")):
            chat(client, f"[late-{name}-{i}]", stream=i == 2)
            later.append(f"[late-{name}-{i}]")
    print(json.dumps({"pid": os.getpid(), "later": later}), flush=True)


if __name__ == "__main__":
    main()
