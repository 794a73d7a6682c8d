"""The analyzer on several processes: `oisp-analyze --workers N` and fleet mode on a local Dask cluster,
against one process, on the generated corpus of bench/analyzer_throughput.py. Wall time, CPU time
(every process of the run), and peak resident memory of the largest process (sampled every 20 ms over
the run's process tree). Each output is checked to be byte-identical to one process's.

usage: python bench/analyzer_parallel.py [MB[,MB...]] [workers...]   (default: 300,1000 MB; 2 workers)
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from analyzer_throughput import generate  # noqa: E402
from report import write_section  # noqa: E402

from analyzer.parallel.run import available_cores  # noqa: E402

BIN = Path(sys.executable).parent
KEY = REPO / "tests" / "fixtures" / "hash.key"


def _watch(proc: subprocess.Popen, peaks: dict[int, int], cpu: dict[int, float], stop: threading.Event):
    root = psutil.Process(proc.pid)
    while not stop.is_set():
        try:
            tree = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return
        for p in tree:
            try:
                peaks[p.pid] = max(peaks.get(p.pid, 0), p.memory_info().rss)
                t = p.cpu_times()
                cpu[p.pid] = t.user + t.system
            except psutil.NoSuchProcess:
                pass
        time.sleep(0.02)


def run(args: list[str]) -> dict:
    peaks: dict[int, int] = {}
    cpu: dict[int, float] = {}
    stop = threading.Event()
    started = time.perf_counter()
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, text=True)
    watcher = threading.Thread(target=_watch, args=(proc, peaks, cpu, stop))
    watcher.start()
    _, stderr = proc.communicate()
    elapsed = time.perf_counter() - started
    stop.set()
    watcher.join()
    if proc.returncode != 0:
        raise SystemExit(f"{args} failed: {stderr}")
    return {"elapsed": elapsed, "cpu": sum(cpu.values()), "peak_mb": max(peaks.values()) / 1e6,
            "processes": len(peaks), "summary": stderr.strip().splitlines()[-1]}


def digest(paths) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(Path(p).read_bytes())
    return h.hexdigest()


def measure(mb: float, counts: list[int]) -> list[dict]:
    """Every run on a corpus of `mb` MB of payload: one process first, the one the others must equal."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="oisp-parallel-bench-") as tmp:
        tmp = Path(tmp)
        (tmp / "config.yaml").write_text(f"analyzer:\n  hash_key_file: {json.dumps(str(KEY))}\n")
        segments = tmp / "segments"
        segments.mkdir()
        payload, n_rows = generate(segments, int(mb * 1e6))
        common = ["--config", str(tmp / "config.yaml")]
        for n in [1, *counts]:
            out = tmp / f"w{n}"
            out.mkdir()
            r = run([str(BIN / "oisp-analyze"), str(segments), *common, "--workers", str(n),
                     "--out", str(out / "events.jsonl"), "--exchanges", str(out / "exchanges.jsonl")])
            r.update(what=f"`--workers {n}`", digest=digest([out / "events.jsonl", out / "exchanges.jsonl"]))
            rows.append(r)
        events_one = digest([tmp / "w1" / "events.jsonl"])
        for n in counts:
            out = tmp / f"fleet{n}"
            r = run([str(BIN / "oisp-analyze"), "fleet", str(segments), "--out", str(out), *common,
                     "--workers", str(n), "--partitions-per-node", str(n)])
            # one node, one day: the events are one file, the same as one process's
            r.update(what=f"`fleet`, local cluster of {n}",
                     same=digest(sorted(out.glob("events/date=*/node=*/events.jsonl"))) == events_one)
            rows.append(r)
    for r in rows:
        if "same" not in r:
            r["same"] = r["digest"] == rows[0]["digest"]
        r.update(payload=payload, rows=n_rows, one=rows[0]["elapsed"])
        print(json.dumps(r), file=sys.stderr)
    return rows


def main() -> None:
    sizes = [float(a) for a in sys.argv[1].split(",")] if len(sys.argv) > 1 else [300, 1000]
    counts = [int(a) for a in sys.argv[2:]] or [2]
    rows = [r for mb in sizes for r in measure(mb, counts)]
    table = "\n".join(
        f"| {r['payload'] / 1e6:.0f} MB ({r['rows']:,} rows) | {r['what']} | {r['elapsed']:.1f} s "
        f"({r['one'] / r['elapsed']:.2f}x) | {r['cpu']:.1f} s | {r['peak_mb']:.0f} MB | {r['processes']} "
        f"| {'yes' if r['same'] else 'NO'} |" for r in rows)
    body = f"""## The analyzer on several processes (`bench/analyzer_parallel.py`)

The corpus of `bench/analyzer_throughput.py` (its mixed templates, one node): `oisp-analyze DIR --out ...
--exchanges ... --workers N`, and `oisp-analyze fleet DIR --out OUT --workers N --partitions-per-node N`
(a local Dask cluster). CPU time counts every process of the run; peak memory is the largest process's
resident set, sampled every 20 ms. "Same" compares the events (and exchanges) with one process's, byte
for byte. On {available_cores()} cores shared with other work: the speed-up is what this machine gave
at the time, not a bound.

| captured payload | run | wall time (speed-up) | CPU time | peak RSS (largest process) | processes | same |
| --- | --- | --- | --- | --- | --- | --- |
{table}"""
    write_section("analyzer-parallel", body)


if __name__ == "__main__":
    main()
