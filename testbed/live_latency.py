"""How long after a call's last byte its events are in the live analyzer's events file: the real
recorder and `oisp-analyze --follow` with the DaemonSet's settings (10 s segments, a flush every
0.25 s, the directory looked at every 0.25 s, finished exchanges handed out at once), a client making
chat completions at a steady pace (testbed/latency_client.py) against the fake OpenAI server on
loopback. The events file is read every 10 ms; each call's latency is the time its ai.request line
was first seen less the time its client read the answer's last byte (both wall clock, one machine).

Used by tests/ebpf/test_live_latency.py and bench/live_latency.py.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from . import fake_providers
from .hypercorn_server import HypercornServer
from .pki import make_pki

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
RECORDER = {"segment_max_seconds": 10, "flush_interval_seconds": 0.25, "log_level": "info"}
ANALYZER = {"poll_interval_seconds": 0.25, "connection_idle_seconds": 0}
_PROBE = re.compile(r"latency-probe-(\d+)")


@dataclass
class LatencyRun:
    calls: int
    latencies_ms: list[float]  # per call, in call order (the calls whose event came)
    missing: list[int]  # calls whose ai.request event never came
    duplicated: list[int]  # calls whose ai.request event came more than once
    published_before_last_event: int  # segments published by the time the last event was seen
    kills: list[str] = field(default_factory=list)  # what was SIGKILLed, when (s after the first call)
    unrecorded: list[int] = field(default_factory=list)  # calls made while no recorder was running
    analyzer_log: str = ""
    recorder_log: str = ""
    seen: dict[int, float] = field(default_factory=dict)
    seconds: float = 0.0  # from the client's start to its last answer

    def percentile(self, p: float) -> float:
        xs = sorted(self.latencies_ms)
        return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))] if xs else float("nan")


class _Tail(threading.Thread):
    """Reads the events file every 10 ms; the wall-clock time each ai.request probe line was seen."""

    def __init__(self, path: Path):
        super().__init__(daemon=True)
        self.path = path
        self.seen: dict[int, int] = {}
        self.counts: dict[int, int] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        pos, rest = 0, b""
        while not self.stop.is_set():
            try:
                with open(self.path, "rb") as f:
                    if os.fstat(f.fileno()).st_size < pos:  # a killed analyzer's cut line, removed
                        pos, rest = os.fstat(f.fileno()).st_size, b""
                    f.seek(pos)
                    data = f.read()
            except FileNotFoundError:
                data = b""
            now = time.time_ns()
            pos += len(data)
            lines = (rest + data).split(b"\n")
            rest = lines.pop()
            for line in lines:
                ev = json.loads(line)
                if ev.get("event_type") != "ai.request":
                    continue
                m = _PROBE.search(json.dumps(ev.get("data", {}).get("messages")))
                if m:
                    i = int(m.group(1))
                    self.seen.setdefault(i, now)
                    self.counts[i] = self.counts.get(i, 0) + 1
            self.stop.wait(0.01)


def run(workdir: Path, calls: int, per_second: float, analyzer_kills: int = 0, recorder_kill: bool = False,
        seed: int = 0, connections: int = 1) -> LatencyRun:
    """`connections`: the client's keep-alive connections, each on a thread of its own. With
    `analyzer_kills`, the analyzer is SIGKILLed that many times at random moments of the run and
    started again at once; with `recorder_kill`, the recorder is once, and started again (the calls
    made until it is ready again are not recorded: `unrecorded`)."""
    workdir.mkdir(parents=True, exist_ok=True)
    pki = make_pki(workdir / "pki", "localhost")
    server = HypercornServer(pki, workdir, app=fake_providers.app, keep_alive_seconds=300)
    segments, events = workdir / "segments", workdir / "events.jsonl"
    config = workdir / "config.yaml"
    config.write_text(yaml.safe_dump({
        "recorder": RECORDER,
        "analyzer": {**ANALYZER, "endpoints": {f"localhost:{server.port}": {"provider": "openai",
                                                                           "api_format": "openai"}}}}))
    client = subprocess.Popen([sys.executable, "-m", "testbed.latency_client", server.url, str(pki.ca_file),
                               str(calls), str(per_second), str(connections)],
                              cwd=REPO, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    procs: dict[str, subprocess.Popen] = {}  # "recorder", "analyzer": the running ones, as kills replace them
    rec_log, an_log = workdir / "recorder.log", workdir / "analyzer.log"
    ready = workdir / "ready.json"
    tail = _Tail(events)
    kills: list[str] = []
    down: list[tuple[float, float]] = []  # wall-clock spans without a recorder

    def start_recorder() -> subprocess.Popen:
        ready.unlink(missing_ok=True)
        with rec_log.open("a") as out:
            proc = subprocess.Popen([str(BIN / "oisp-record"), "--config", str(config), "--segments-dir",
                                     str(segments), "--ready-file", str(ready), "--pid", str(client.pid)],
                                    stdout=out, stderr=subprocess.STDOUT)
        while not ready.exists():
            if proc.poll() is not None:
                raise RuntimeError(f"the recorder failed:\n{rec_log.read_text()}")
            time.sleep(0.05)  # polling the recorder's readiness signal
        return proc

    def start_analyzer() -> subprocess.Popen:
        with an_log.open("a") as out:
            return subprocess.Popen([str(BIN / "oisp-analyze"), str(segments), "--follow", "--out",
                                     str(events), "--config", str(config)],
                                    stdout=out, stderr=subprocess.STDOUT)

    try:
        if client.stdout.readline().strip() != "ready":
            raise RuntimeError("the client did not start")
        procs["recorder"] = start_recorder()
        procs["analyzer"] = start_analyzer()
        tail.start()
        client.stdin.write("go\n")
        client.stdin.flush()
        began = time.monotonic()
        span = calls / per_second
        rng = random.Random(seed)
        # the recorder early (it takes seconds to start again), the analyzer at random after that; each
        # program on a timer thread of its own, so that a recorder being started again delays no kill
        plans = {"analyzer": sorted(rng.uniform(0.4, 0.9) * span for _ in range(analyzer_kills)),
                 "recorder": [rng.uniform(0.1, 0.2) * span] if recorder_kill else []}
        ending = threading.Event()
        failures: list[BaseException] = []

        def killer(what: str) -> None:
            try:
                for at in plans[what]:
                    if ending.wait(max(0.0, began + at - time.monotonic())):
                        return
                    kills.append(f"{what} at {time.monotonic() - began:.2f} s")
                    stopped = time.time_ns()
                    procs[what].kill()
                    procs[what].wait()
                    if what == "analyzer":
                        procs[what] = start_analyzer()
                    else:
                        procs[what] = start_recorder()  # salvages what the killed one was writing
                        down.append((stopped, time.time_ns()))
            except BaseException as exc:  # noqa: BLE001 - raised in the caller's thread
                failures.append(exc)

        killers = [threading.Thread(target=killer, args=(what,), daemon=True) for what in plans
                   if plans[what]]
        for t in killers:
            t.start()
        done = [json.loads(line) for line in client.stdout]
        ending.set()
        for t in killers:
            t.join()
        if failures:
            raise failures[0]
        if client.wait(timeout=60) != 0:
            raise RuntimeError(f"the client failed (exit {client.returncode})")
        seconds = time.monotonic() - began
        deadline = time.monotonic() + 30  # the last events: a poll or two after the last call
        while len(tail.seen) < len(done) and time.monotonic() < deadline:
            time.sleep(0.05)  # polling the events file's progress
        published = len(list(segments.glob("*.parquet")))
    finally:
        tail.stop.set()
        for proc in filter(None, (procs.get("analyzer"), procs.get("recorder"))):  # the analyzer first
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=60)
        if client.poll() is None:
            client.kill()
        server.close()
    # a call whose answer ended while no recorder ran (or just after: its request went unrecorded)
    unrecorded = [c["i"] for c in done for a, b in down if a - 1e9 <= c["last_byte_ns"] <= b + 1e9]
    last = {c["i"]: c["last_byte_ns"] for c in done}
    return LatencyRun(
        calls=len(done),
        latencies_ms=[(tail.seen[i] - last[i]) / 1e6 for i in sorted(last) if i in tail.seen],
        missing=sorted(i for i in last if i not in tail.seen and i not in unrecorded),
        duplicated=sorted(i for i, n in tail.counts.items() if n > 1),
        published_before_last_event=published,
        analyzer_log=an_log.read_text(), recorder_log=rec_log.read_text(),
        seen={i: t / 1e9 for i, t in tail.seen.items()}, kills=kills, unrecorded=unrecorded, seconds=seconds)
