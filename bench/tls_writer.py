"""The traced application of the benchmarks: SSL_write_ex calls as fast as it can (or at a set rate).

TLS runs over memory BIOs (ssl.SSLObject), so the measured time is the TLS call itself plus the
probes, with no socket or peer process in the way. Prints one JSON line of results.

usage: python bench/tls_writer.py --size BYTES (--count N | --seconds S) [--rate CALLS_PER_S]
"""

from __future__ import annotations

import argparse
import json
import os
import ssl
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from testbed.pki import make_pki  # noqa: E402


def connected_pair(workdir: Path) -> tuple[ssl.SSLObject, ssl.MemoryBIO]:
    pki = make_pki(workdir)
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = pki.client_context().wrap_bio(c_in, c_out, server_hostname="localhost")
    server = pki.server_context().wrap_bio(s_in, s_out, server_side=True)
    for _ in range(10):  # handshake by shuttling bytes between the two memory BIOs
        for obj in (client, server):
            try:
                obj.do_handshake()
            except ssl.SSLWantReadError:
                pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        try:
            client.do_handshake()
            server.do_handshake()
            break
        except ssl.SSLWantReadError:
            continue
    return client, c_out


def payload(size: int) -> bytes:
    """JSON-like text, as AI API traffic is (compressible, unlike random bytes)."""
    unit = b'{"role":"user","content":"The quick brown fox jumps over the lazy dog %06d."},'
    out = bytearray()
    i = 0
    while len(out) < size:
        out += unit % i
        i += 1
    return bytes(out[:size])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, required=True)
    ap.add_argument("--count", type=int)
    ap.add_argument("--seconds", type=float)
    ap.add_argument("--rate", type=float, help="calls per second (default: as fast as possible)")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/oisp-bench-pki"))
    args = ap.parse_args()
    client, out_bio = connected_pair(args.workdir)
    data = payload(args.size)
    write, drain = client.write, out_bio.read
    calls = 0
    start = time.perf_counter()
    if args.count:
        for _ in range(args.count):
            write(data)
            drain()
        calls = args.count
    else:
        end = start + args.seconds
        interval = 1.0 / args.rate if args.rate else 0.0
        next_at = start
        while True:
            now = time.perf_counter()
            if now >= end:
                break
            if interval:
                if now < next_at:
                    time.sleep(min(next_at - now, 0.001))
                    continue
                next_at += interval
            write(data)
            drain()
            calls += 1
    elapsed = time.perf_counter() - start
    cpu = os.times()
    print(json.dumps({
        "pid": os.getpid(), "size": args.size, "calls": calls, "seconds": elapsed,
        "ns_per_call": elapsed * 1e9 / max(calls, 1), "cpu_seconds": cpu.user + cpu.system,
    }))


if __name__ == "__main__":
    main()
