"""Live latency under load: the real recorder and `oisp-analyze --follow` with the DaemonSet's settings,
a client at a steady pace (testbed/live_latency.py), the time from each call's last byte to its event
line in the events file: p50, p95 and max, at each rate. Results in docs/performance.md.

usage: python bench/live_latency.py [--seconds S] [--rates R,R...] [--connections N,N...] [--no-write]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from report import write_section  # noqa: E402

from testbed import live_latency  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=35.0,
                    help="length of each run (the segments are 10 s: a run of 35 s sees 3 published)")
    ap.add_argument("--rates", default="20,100", help="calls per second, comma-separated")
    ap.add_argument("--connections", default="1,10",
                    help="the client's concurrent keep-alive connections, comma-separated (each rate is run "
                         "with each)")
    ap.add_argument("--no-write", action="store_true", help="print only; leave docs/performance.md")
    args = ap.parse_args()
    rows = []
    runs = [(float(r), int(c)) for r in args.rates.split(",") for c in args.connections.split(",")]
    for rate, connections in runs:
        with tempfile.TemporaryDirectory(prefix="oisp-latency-") as tmp:
            run = live_latency.run(Path(tmp), calls=int(rate * args.seconds), per_second=rate,
                                   connections=connections)
        achieved = run.calls / run.seconds
        row = (f"| {rate:.0f} | {connections} | {run.calls} ({achieved:.0f}/s) | {run.percentile(50):.0f} | "
               f"{run.percentile(95):.0f} | {max(run.latencies_ms, default=float('nan')):.0f} | "
               f"{len(run.missing)} | {len(run.duplicated)} | {run.published_before_last_event} |")
        print(row, flush=True)
        rows.append(row)
    text = "\n".join([
        "## Live latency (`bench/live_latency.py`)",
        "",
        "From a call's last byte (the client's clock) to its `ai.request` line in the events file (read",
        "every 10 ms), with the DaemonSet's settings: segments of 10 s, the recorder's flush every 0.25 s,",
        "the analyzer looking every 0.25 s at the published segments and at the one being written, finished",
        "exchanges handed out at once (`connection_idle_seconds: 0`). One client process with 1 or 10",
        "keep-alive HTTPS connections on threads of their own (httpx over Python's ssl), half the calls",
        "streamed, against the fake OpenAI server on loopback; the calls are paced, so at high rates they",
        "take what the machine gives them (achieved rate in brackets). Each run is longer than three",
        "segments, so calls whose bytes straddle a publish and the analyzer reading a published segment are",
        "in the figures. Segments published: how many the recorder had published when the last event was",
        "seen.",
        "",
        "| calls/s asked | connections | calls (achieved) | p50 ms | p95 ms | max ms | missing | duplicated "
        "| segments published |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        *rows,
    ])
    if not args.no_write:
        write_section("live-latency", text)


if __name__ == "__main__":
    main()
