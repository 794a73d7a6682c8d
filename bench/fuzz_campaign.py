"""The long fuzz campaign (`make fuzz`): many hostile connections (tests/helpers/hostile_inputs.py) through
the whole analysis, on every core; counts inputs, crashes (by exception site), hangs and peak memory, and
writes the figures to docs/performance.md.

    .venv/bin/python bench/fuzz_campaign.py [--inputs 100000] [--workers N] [--hang-seconds 10]

Each worker analyzes a contiguous range of seeds in one process (a crash is caught and counted, a hang is
cut by an alarm and counted), so peak memory is the largest resident set of one analyzer process after
thousands of inputs: what the analyzer container's memory limit must hold. A seed reproduces its input:
`run_analysis(connection_rows(random.Random(SEED)))`.
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import resource
import signal
import sys
import time
import traceback
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests"), str(REPO / "bench")]

from report import write_section  # noqa: E402

from helpers.hostile_inputs import connection_rows, run_analysis  # noqa: E402

# The analyzer container's memory limit in the DaemonSet (manifests/base/daemonset.yaml).
CONTAINER_LIMIT_MIB = 1024


class Hang(Exception):
    pass


def _alarm(*_):
    raise Hang()


def run_range(first: int, count: int, hang_seconds: float) -> dict:
    """Analyze seeds first..first+count-1 in this process; what went wrong, and the peak memory."""
    signal.signal(signal.SIGALRM, _alarm)
    crashes: dict[str, list[int]] = collections.defaultdict(list)
    hangs: list[int] = []
    caught: list[int] = []  # seeds whose exceptions the analyzer's own boundaries caught
    lines = 0
    for seed in range(first, first + count):
        rows = connection_rows(random.Random(seed))
        # every content mode for one input in ten: the three share all but the event building
        contents = ("full", "hash", "none") if seed % 10 == 0 else ("full",)
        signal.setitimer(signal.ITIMER_REAL, hang_seconds)
        errors: list[int] = []
        try:
            lines += run_analysis(rows, contents, errors)
            if sum(errors):
                caught.append(seed)
        except Hang:
            hangs.append(seed)
        except Exception as exc:  # counted by site: the campaign's whole point
            frame = traceback.extract_tb(exc.__traceback__)[-1]
            site = f"{type(exc).__name__} at {Path(frame.filename).name}:{frame.lineno}"
            crashes[site].append(seed)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"crashes": dict(crashes), "hangs": hangs, "caught": caught, "lines": lines, "peak_mib": peak_mib}


def campaign(inputs: int, workers: int, hang_seconds: float) -> dict:
    per = -(-inputs // (workers * 8))  # several ranges per worker: progress shows as they finish
    ranges = [(start, min(per, inputs - start)) for start in range(0, inputs, per)]
    crashes: dict[str, list[int]] = collections.defaultdict(list)
    hangs: list[int] = []
    caught: list[int] = []
    lines, peak, done = 0, 0.0, 0
    started = time.monotonic()
    with ProcessPoolExecutor(workers, max_tasks_per_child=1) as pool:
        futures = [pool.submit(run_range, first, count, hang_seconds) for first, count in ranges]
        for (_, count), future in zip(ranges, futures, strict=True):
            result = future.result()
            for site, seeds in result["crashes"].items():
                crashes[site] += seeds
            hangs += result["hangs"]
            caught += result["caught"]
            lines += result["lines"]
            peak = max(peak, result["peak_mib"])
            done += count
            print(f"fuzz: {done}/{inputs} inputs, {sum(map(len, crashes.values()))} crashes, "
                  f"{len(hangs)} hangs, {len(caught)} caught by a boundary, "
                  f"{time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
    return {"inputs": inputs, "crashes": dict(crashes), "hangs": hangs, "caught": caught, "lines": lines,
            "peak_mib": peak,
            "seconds": time.monotonic() - started, "workers": workers, "hang_seconds": hang_seconds}


def report(r: dict) -> str:
    crashed, seconds = sum(map(len, r["crashes"].values())), f"{r['seconds']:.0f}"
    peak, lines = f"{r['peak_mib']:.0f} MiB", f"{r['lines']:,}"
    rows = "\n".join(f"| {site} | {len(seeds)} | {', '.join(map(str, seeds[:5]))} |"
                     for site, seeds in sorted(r["crashes"].items(), key=lambda kv: -len(kv[1])))
    body = f"""## Fuzz campaign: hostile connections through the whole analysis (`bench/fuzz_campaign.py`)
`make fuzz` generates AI-shaped HTTP/1.1 and HTTP/2 connections from seeds (lying framing, odd and bomb
encodings, type-bent and deeply nested JSON, broken event streams, gaps, overlaps, reordering and nulls in
the rows: tests/helpers/hostile_inputs.py) and puts each through the tracker, the HTTP parsers, body
decoding, the AI formats and event building (every content mode for one input in ten), each worker
process analyzing thousands of inputs in a row.

| inputs | crashes | hangs | caught by a boundary | output lines | peak memory, one process | time |
| --- | --- | --- | --- | --- | --- | --- |
| {r["inputs"]:,} | {crashed} | {len(r["hangs"])} | {len(r["caught"])} | {lines} | {peak} | {seconds} s |

A crash is an exception out of the analysis; "caught by a boundary" counts inputs on which a parser
raised and the analyzer's per-connection or per-exchange boundary caught it (the run went on, the output
says `parse_error`; each is still a parser bug). A hang is an input still unfinished after
{r["hang_seconds"]:g} s. The analyzer container's memory limit in the DaemonSet is {CONTAINER_LIMIT_MIB} MiB;
{r["workers"]} worker processes.
"""
    if rows:
        body += "\n| crash site | inputs | seeds |\n| --- | --- | --- |\n" + rows + "\n"
    if r["hangs"]:
        body += f"\nHanging seeds: {', '.join(map(str, r['hangs'][:20]))}\n"
    if r["caught"]:
        body += f"\nSeeds caught by a boundary: {', '.join(map(str, r['caught'][:20]))}\n"
    return body


HANG_SECONDS_DEFAULT = 10.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--hang-seconds", type=float, default=HANG_SECONDS_DEFAULT)
    parser.add_argument("--no-write", action="store_true", help="print the figures, leave docs alone")
    args = parser.parse_args()
    r = campaign(args.inputs, args.workers, args.hang_seconds)
    body = report(r)
    print(body)
    if not args.no_write:
        write_section("fuzz", body)
    return 1 if r["crashes"] or r["hangs"] or r["caught"] else 0


if __name__ == "__main__":
    sys.exit(main())
