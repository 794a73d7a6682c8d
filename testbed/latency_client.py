"""A client making chat completions at a steady pace over one keep-alive HTTPS connection (httpx,
Python's ssl: OpenSSL), for the live-latency measurement (testbed/live_latency.py).

usage: python -m testbed.latency_client URL CA_FILE CALLS PER_SECOND
Prints `ready` and waits for a line on stdin; then for each call, once its whole answer is read, a JSON
line {"i": N, "last_byte_ns": wall-clock ns}. The prompt of call N is `latency-probe-N`, which its
events carry.
"""

from __future__ import annotations

import json
import sys
import time

import httpx


def main() -> None:
    url, ca_file, calls, rate = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    with httpx.Client(verify=ca_file, timeout=30) as client:
        print("ready", flush=True)
        sys.stdin.readline()
        start = time.monotonic()
        for i in range(calls):
            body = {"model": "gpt-4o-mini", "stream": i % 2 == 1,
                    "messages": [{"role": "user", "content": f"latency-probe-{i}"}]}
            with client.stream("POST", f"{url}/v1/chat/completions", json=body) as response:
                for _ in response.iter_bytes():
                    pass
            print(json.dumps({"i": i, "last_byte_ns": time.time_ns()}), flush=True)
            # the workload's pace, not a synchronisation
            time.sleep(max(0.0, start + (i + 1) / rate - time.monotonic()))


if __name__ == "__main__":
    main()
