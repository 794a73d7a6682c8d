"""What the plaintext capture's system-call hooks cost the processes of the node.

Two workloads, each a fresh process timing its own system calls:
- `files`: writes of 4 KiB to a file and to a pipe (and reads of the pipe): never captured, each
  passes the read/write tracepoints' one hash lookup;
- `socket`: an HTTP/1.1 client posting 4 KiB bodies over one keep-alive connection to a plaintext
  server on an in-scope port: every byte captured (sendto/recvfrom, copied to the ring buffer).
Each is run with no recorder, then under the recorder (plaintext capture on, its port in scope), in
alternation, REPEATS times; medians, and the ratio to no hooks.

Usage: sudo .venv/bin/python bench/plaintext_overhead.py [REPEATS]
"""

from __future__ import annotations

import json
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO / "tests"))

from report import write_section  # noqa: E402

from conftest import start_recorder  # noqa: E402

OPS = 20000
WORKLOAD = """
import json, os, socket, sys, time
kind, port, ops = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
block = b"x" * 4096
if kind == "files":
    r, w = os.pipe()
    with open(sys.argv[4], "wb", buffering=0) as f:
        t = time.perf_counter_ns()
        for _ in range(ops):
            f.write(block)
            os.write(w, block)
            os.read(r, 4096)
        ns = time.perf_counter_ns() - t
    calls = 3 * ops
else:
    s = socket.create_connection(("127.0.0.1", port))
    head = b"POST /v1/bench HTTP/1.1\\r\\nHost: bench\\r\\ncontent-length: 4096\\r\\n\\r\\n"
    t = time.perf_counter_ns()
    for _ in range(ops):
        s.sendall(head + block)
        s.recv(65536)
    ns = time.perf_counter_ns() - t
    calls = 2 * ops
print(json.dumps({"ns_per_call": ns / calls}))
"""


class Responder:
    """Answers every request with a fixed small response, as fast as it can."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        conn, _ = self.sock.accept()
        reply = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
        with conn:
            while conn.recv(65536):
                conn.sendall(reply)


def run(kind: str, port: int, work: Path) -> float:
    out = subprocess.run([sys.executable, "-c", WORKLOAD, kind, str(port), str(OPS), str(work / "file.bin")],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)["ns_per_call"]


def main() -> None:
    repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    work = Path(tempfile.mkdtemp(prefix="plain-bench-"))
    results: dict[tuple[str, str], list[float]] = {}
    for _ in range(repeats):
        for setting in ("none", "recorder"):
            responders = {kind: Responder() for kind in ("files", "socket")}
            rec = None
            if setting == "recorder":
                (work / "rec").mkdir(exist_ok=True)
                shutil.rmtree(work / "rec" / "segments", ignore_errors=True)
                rec = start_recorder(work / "rec", config={
                    "plaintext_ports": [r.port for r in responders.values()]})
            for kind in ("files", "socket"):
                results.setdefault((kind, setting), []).append(run(kind, responders[kind].port, work))
            if rec is not None:
                assert rec.stop() == 0
    shutil.rmtree(work, ignore_errors=True)
    lines = ["| workload | no hooks (ns per call) | under the recorder | ratio |",
             "| --- | --- | --- | --- |"]
    labels = {"files": "file and pipe writes/reads, 4 KiB (never captured)",
              "socket": "HTTP/1.1 over an in-scope socket, 4 KiB bodies (every byte captured)"}
    for kind in ("files", "socket"):
        base = statistics.median(results[(kind, "none")])
        hooked = statistics.median(results[(kind, "recorder")])
        lines.append(f"| {labels[kind]} | {base:.0f} | {hooked:.0f} | {hooked / base:.2f} |")
    body = ("## Plaintext capture: the cost of the system-call hooks\n\n"
            f"`bench/plaintext_overhead.py`: a fresh Python process makes {OPS} rounds of system calls and "
            "times them itself, with no recorder and under the recorder (plaintext capture on, the socket's "
            f"port in scope), alternately, {repeats} times each; medians. Every read and write on the node "
            "passes the tracepoints: one hash lookup for a descriptor that is not a tracked socket. Captured "
            "sockets pay the copy into the ring buffer, as TLS capture does.\n\n" + "\n".join(lines))
    print(body)
    write_section("plaintext_overhead", body)


if __name__ == "__main__":
    main()
