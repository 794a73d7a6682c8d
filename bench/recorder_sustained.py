"""Sustained capture: the highest rate of 4 KiB SSL_write_ex calls held for 30 s with zero drops,
and the recorder's CPU use at that rate.

First the traced application writes as fast as one core allows; if anything was dropped, the rate
is lowered step by step until a 30 s run loses nothing. Target (issue 2): zero drops at full speed,
with the recorder under one core.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))

from report import write_section  # noqa: E402

PY = sys.executable
SECONDS = float(os.environ.get("BENCH_SECONDS", 30))
SIZE = 4096
FULL_SPEED_RUNS = 3
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def run(rate: float | None) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix="oisp-bench-"))
    ready = workdir / "ready"
    log = workdir / "recorder.log"
    rec = subprocess.Popen(
        [str(Path(PY).parent / "oisp-record"), "--segments-dir", str(workdir / "segments"),
         "--ready-file", str(ready)],
        stdout=open(log, "w"), stderr=subprocess.STDOUT,
    )
    while not ready.exists():
        if rec.poll() is not None:
            raise SystemExit(f"recorder failed:\n{log.read_text()}")
        time.sleep(0.05)
    cpu0, t0 = cpu_seconds(rec.pid), time.monotonic()
    cmd = [PY, str(REPO / "bench/tls_writer.py"), "--size", str(SIZE), "--seconds", str(SECONDS)]
    if rate:
        cmd += ["--rate", str(rate)]
    writer = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
    cpu1, t1 = cpu_seconds(rec.pid), time.monotonic()
    rec.terminate()
    rec.wait()
    totals = next(json.loads(line.split("final totals ", 1)[1])
                  for line in reversed(log.read_text().splitlines()) if "final totals " in line)
    disk = sum(f.stat().st_size for f in (workdir / "segments").glob("*.parquet"))
    return {
        "requested_rate": rate,
        "calls_per_s": writer["calls"] / writer["seconds"],
        "mb_per_s": writer["calls"] * SIZE / writer["seconds"] / 1e6,
        "writer_cpu": writer["cpu_seconds"] / writer["seconds"],
        "recorder_cpu": (cpu1 - cpu0) / (t1 - t0),
        "captured_bytes": totals["bytes"],
        "dropped_bytes": totals["dropped_bytes"] + totals["unexplained_gap_bytes"],
        "dropped_records": totals["dropped_records"],
        "segment_bytes": disk,
        "calls": writer["calls"],
    }


def main() -> None:
    # full speed three times (this VM's speed varies run to run), then slower while anything drops
    attempts = [run(None) for _ in range(FULL_SPEED_RUNS)]
    while all(a["dropped_bytes"] for a in attempts) and len(attempts) < FULL_SPEED_RUNS + 3:
        attempts.append(run(min(a["calls_per_s"] for a in attempts) * 0.75))
    for a in attempts:
        print(json.dumps(a), file=sys.stderr)
    def rate_label(a: dict) -> str:
        return "as fast as possible" if a["requested_rate"] is None else f"{a['requested_rate']:.0f}/s"

    rows = "\n".join(
        f"| {rate_label(a)} | {a['calls_per_s']:.0f} | {a['mb_per_s']:.1f} | {a['writer_cpu'] * 100:.0f}% "
        f"| {a['recorder_cpu'] * 100:.0f}% | {a['dropped_bytes']} | "
        f"{a['captured_bytes'] / max(a['segment_bytes'], 1):.1f}x |"
        for a in attempts
    )
    clean = [a for a in attempts if not a["dropped_bytes"]]
    full = attempts[:FULL_SPEED_RUNS]
    verdict = (
        f"Zero drops in {sum(not a['dropped_bytes'] for a in full)} of {FULL_SPEED_RUNS} runs at full "
        f"speed; the highest clean rate was {max(a['calls_per_s'] for a in clean):.0f} calls/s "
        f"({max(a['mb_per_s'] for a in clean):.1f} MB/s of plaintext), the recorder using at most "
        f"{max(a['recorder_cpu'] for a in clean) * 100:.0f}% of one core."
        if clean else "Drops at every rate tried: see the table."
    )
    body = f"""## Sustained capture (`bench/recorder_sustained.py`)

A traced Python process calls `SSL_write_ex` with 4 KiB of JSON-like text for {SECONDS:.0f} s (memory
BIOs, one core), {FULL_SPEED_RUNS} times as fast as it can, then (only if every one of those dropped
something) slower until nothing is dropped. The recorder runs
with its default configuration (64 MiB ring buffer read every 20 ms through its memory mapping, a
batch decoded every
0.25 s, zstd level 1). CPU is the
share of one core over the run; "dropped" counts every byte not captured (ring buffer full, and
offset jumps); compression is captured plaintext over segment bytes on disk.

| writer rate | calls/s | MB/s | writer CPU | recorder CPU | dropped bytes | compression |
| --- | --- | --- | --- | --- | --- | --- |
{rows}

{verdict} Target: zero drops while one core of traced application writes as fast as it can, with
the recorder under one core.

History: with pyarrow's default memory pool (mimalloc, which returns freed memory to the kernel at
once) decoding a 0.25 s batch took 0.2 to 1.7 s in the first seconds of load, because every batch
faulted its memory in afresh, and about 9% of the bytes were dropped at full speed even with a
128 MiB ring buffer. With jemalloc the same batches take 0.05 to 0.1 s. The compression figure is
far above what real traffic gets, because the benchmark repeats one payload. Reading the ring
buffer through its mapping instead of libbpf's per-record ctypes callback, and 64 MiB instead of
32 MiB, took the last drops away in 30 s runs by hand (0.5% before)."""
    write_section("sustained", body)


if __name__ == "__main__":
    main()
