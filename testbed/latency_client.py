"""A client making chat completions at a steady pace over keep-alive HTTPS connections (httpx, Python's
ssl: OpenSSL), for the live-latency measurement (testbed/live_latency.py).

usage: python -m testbed.latency_client URL CA_FILE CALLS PER_SECOND [CONNECTIONS]
Prints `ready` and waits for a line on stdin; then for each call, once its whole answer is read, a JSON
line {"i": N, "last_byte_ns": wall-clock ns}. The prompt of call N is `latency-probe-N`, which its
events carry. With CONNECTIONS (default 1), that many threads each keep their own connection and make
every CONNECTIONS-th call, together at PER_SECOND.
"""

from __future__ import annotations

import json
import sys
import threading
import time

import httpx


def calls_on_one_connection(url: str, ca_file: str, indices: range, rate: float, start_line: threading.Event,
                            lock: threading.Lock) -> None:
    with httpx.Client(verify=ca_file, timeout=30) as client:
        start_line.wait()
        start = time.monotonic()
        for n, i in enumerate(indices):
            body = {"model": "gpt-4o-mini", "stream": i % 2 == 1,
                    "messages": [{"role": "user", "content": f"latency-probe-{i}"}]}
            with client.stream("POST", f"{url}/v1/chat/completions", json=body) as response:
                for _ in response.iter_bytes():
                    pass
            with lock:
                print(json.dumps({"i": i, "last_byte_ns": time.time_ns()}), flush=True)
            # the workload's pace, not a synchronisation
            time.sleep(max(0.0, start + (n + 1) / rate - time.monotonic()))


def main() -> None:
    url, ca_file, calls, rate = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    connections = int(sys.argv[5]) if len(sys.argv) > 5 else 1
    start_line, lock = threading.Event(), threading.Lock()
    threads = [threading.Thread(target=calls_on_one_connection,
                                args=(url, ca_file, range(k, calls, connections), rate / connections,
                                      start_line, lock))
               for k in range(connections)]
    for t in threads:
        t.start()
    print("ready", flush=True)
    sys.stdin.readline()
    start_line.set()
    for t in threads:
        t.join()


if __name__ == "__main__":
    main()
