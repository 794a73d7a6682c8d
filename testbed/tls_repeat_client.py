"""A Python `ssl` client that opens a new TLS connection every INTERVAL ms, for discovery tests.

Usage: python -m testbed.tls_repeat_client PORT CA_FILE COUNT INTERVAL_MS
Each connection sends `POST /python/<i>` to https://localhost:PORT and reads the answer. Prints
{"pid", "sent": [{"i", "t_ms"}]} as JSON, t_ms counted from the process's start (exec), so a test can
tell how soon after exec the first captured request was made.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import sys
import time


def started_ns() -> int:
    """The process's start (exec) on the CLOCK_MONOTONIC-like boot clock, in ns."""
    ticks = int(open(f"/proc/{os.getpid()}/stat").read().rsplit(")", 1)[1].split()[19])
    return ticks * 1_000_000_000 // os.sysconf("SC_CLK_TCK")


def main() -> None:
    port, ca_file, count, interval = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    ctx = ssl.create_default_context(cafile=ca_file)
    start = started_ns()
    sent = []
    for i in range(count):
        body = f"python request {i}".encode()
        request = (f"POST /python/{i} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {len(body)}\r\n"
                   "Connection: close\r\n\r\n").encode() + body
        with socket.create_connection(("127.0.0.1", port)) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost") as conn:
                sent.append({"i": i, "t_ms": (time.clock_gettime_ns(time.CLOCK_BOOTTIME) - start) / 1e6})
                conn.sendall(request)
                while conn.recv(65536):
                    pass
        if i + 1 < count:
            time.sleep(interval / 1000)  # the workload's pacing, not a synchronisation
    print(json.dumps({"pid": os.getpid(), "sent": sent}))


if __name__ == "__main__":
    main()
