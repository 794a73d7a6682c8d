"""The first TLS call of a process started after the recorder, from a file the recorder has never
seen, is captured: the process is held at the file's exec or mapping until the file is judged and
probed (hold_new_files). Real short-lived clients, each with a fresh file of its own, all at once;
and the watchdog that resumes held processes should the recorder die."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from bcc import BPF

from conftest import read_segments, start_recorder
from helpers.go_programs import build
from recorder.capture import holds
from testbed.https_server import HttpsServer

pytestmark = pytest.mark.ebpf

REPO = Path(__file__).resolve().parents[2]
SYSTEM_LIBSSL = Path("/usr/lib/x86_64-linux-gnu/libssl.so.3").resolve()
CLIENTS = 20


def first_requests(segments: Path) -> dict[int, bytes]:
    """pid -> the first bytes each captured connection sent (the request line)."""
    table = read_segments(segments)
    rows = table.select(["pid", "kind", "direction", "stream_offset", "data"]).to_pylist()
    return {r["pid"]: r["data"] for r in rows
            if r["kind"] == "data" and r["direction"] == "egress" and r["stream_offset"] == 0}


def run_all(commands: list[tuple[list[str], dict]]) -> list[dict]:
    """Start every client at once; each prints {"pid", "sent": [{"i", "t_ms"}]} and exits."""
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                              cwd=REPO) for cmd, env in commands]
    out = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 0, stderr
        out.append(json.loads(stdout))
    return out


def test_first_call_of_short_lived_processes_with_never_seen_files(pki, tmp_path, tmp_path_factory):
    """20 Python clients, each loading its own fresh copy of libssl, and 20 fresh copies of a Go client
    (crypto/tls compiled in), all started at once after the recorder, each making one call as soon as
    it can and exiting: 40 of 40 captured."""
    aiclient = build(tmp_path_factory.mktemp("go"), ("aiclient",))["aiclient"]
    server = HttpsServer(pki.server_context())
    (tmp_path / "rec").mkdir()
    rec = start_recorder(tmp_path / "rec")
    try:
        commands = []
        for i in range(CLIENTS):
            lib_dir = tmp_path / f"lib{i}"
            lib_dir.mkdir()
            shutil.copy(SYSTEM_LIBSSL, lib_dir / "libssl.so.3")
            commands.append(([sys.executable, "-m", "testbed.tls_repeat_client", str(server.port),
                              str(pki.ca_file), "1", "10"],
                             {"LD_LIBRARY_PATH": str(lib_dir), "PATH": "/usr/bin:/bin",
                              "PYTHONPATH": str(REPO)}))
            copy = tmp_path / f"aiclient-{i}"
            shutil.copy(aiclient, copy)
            commands.append(([str(copy), "-base", f"https://localhost:{server.port}", "-scenario", "repeat",
                              "-n", "1"], {"SSL_CERT_FILE": str(pki.ca_file)}))
        clients = run_all(commands)
        assert rec.stop() == 0, rec.log[-3000:]
    finally:
        server.close()
    captured = first_requests(rec.segments_dir)
    missed = [(c["pid"], c["sent"][0]["t_ms"]) for c in clients
              if not captured.get(c["pid"], b"").startswith((b"POST /python/0 ", b"POST /go/0 "))]
    assert missed == [], f"(pid, ms after exec) of the calls not captured; log:\n{rec.log[-3000:]}"
    totals = rec.final_totals()
    # each Go copy was held at its exec, each libssl copy at its mapping: the holds did the work
    assert totals["processes_held"] >= 2 * CLIENTS and totals["holds_expired"] == 0, totals


def test_watchdog_resumes_held_processes_when_the_recorder_is_gone():
    """The watchdog gets the held_pids map and a pipe only the recorder writes to: when the pipe
    closes (the recorder died, however), it resumes every process still in the map."""
    bpf = BPF(text=b"BPF_HASH(held_pids, u32, u64, 16);")
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        sleeper.send_signal(signal.SIGSTOP)
        assert holds.wait_stopped(sleeper.pid, sleeper.pid, timeout=5)
        table = bpf[b"held_pids"]
        table[table.Key(sleeper.pid)] = table.Leaf(time.monotonic_ns())
        assert holds.map_pids(table.map_fd) == [sleeper.pid]
        watchdog, pipe = holds.start_watchdog(table.map_fd)
        assert watchdog.poll() is None  # waits while the pipe is open
        os.close(pipe)  # as the kernel does when the recorder exits, however it exits
        assert watchdog.wait(timeout=30) == 0
        assert holds.thread_state(sleeper.pid, sleeper.pid) not in ("T", "t")
    finally:
        sleeper.kill()
        sleeper.wait()
        bpf.cleanup()
