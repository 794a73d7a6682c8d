"""Many TLS library files at once, and both ways of attaching probes: every file probed, every record
naming its own file. Real processes, each loading its own copy of libssl (as each container image
brings its own), under the real recorder."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import read_segments, start_recorder, stream_bytes
from helpers.c_programs import build_static_client
from helpers.go_programs import build
from testbed.https_server import HttpsServer

pytestmark = pytest.mark.ebpf

SYSTEM_LIBSSL = Path("/usr/lib/x86_64-linux-gnu/libssl.so.3").resolve()
# Waits for a line, then makes one HTTPS request through the libssl the loader found first
# (LD_LIBRARY_PATH: the process's own copy) and prints the answer.
CLIENT = """
import http.client, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[2])
print("ready", flush=True)
sys.stdin.readline()
conn = http.client.HTTPSConnection("localhost", int(sys.argv[1]), context=ctx)
conn.request("POST", "/many/" + sys.argv[3], body=b"call " + sys.argv[3].encode())
print(conn.getresponse().read().decode(), flush=True)
"""


def start_clients(tmp_path: Path, server: HttpsServer, ca_file: Path, count: int) -> list[tuple]:
    """(process, its libssl copy) for `count` Python clients, each with its own copy, all loaded."""
    clients = []
    for i in range(count):
        lib_dir = tmp_path / f"lib{i}"
        lib_dir.mkdir()
        shutil.copy(SYSTEM_LIBSSL, lib_dir / "libssl.so.3")
        proc = subprocess.Popen([sys.executable, "-c", CLIENT, str(server.port), str(ca_file), str(i)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                env={"LD_LIBRARY_PATH": str(lib_dir), "PATH": "/usr/bin:/bin"})
        clients.append((proc, lib_dir / "libssl.so.3"))
    for proc, copy in clients:
        assert proc.stdout.readline().strip() == "ready"
        assert str(copy) in Path(f"/proc/{proc.pid}/maps").read_text()  # its own file, loaded
    return clients


def run_calls(clients: list[tuple]) -> None:
    for proc, _ in clients:
        proc.stdin.write("go\n")
        proc.stdin.flush()
    for i, (proc, _) in enumerate(clients):
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0 and out.strip() == f"you asked for /many/{i}", out


def check_each_captured_from_its_copy(segments: Path, clients: list[tuple]) -> None:
    table = read_segments(segments)
    rows = table.drop_columns(["ts_wall", "process_start"]).to_pylist()
    for i, (proc, copy) in enumerate(clients):
        data = [r for r in rows if r["pid"] == proc.pid and r["kind"] == "data"]
        assert data, f"client {i} (pid {proc.pid}) not captured"
        assert {r["lib_path"] for r in data} == {str(copy)}, i
        (conn,) = {r["conn_id"] for r in data}
        assert stream_bytes(table, conn, "egress").startswith(f"POST /many/{i} HTTP/1.1".encode())


def kill_all(clients: list[tuple]) -> None:
    for proc, _ in clients:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_two_hundred_processes_each_with_its_own_libssl(pki, tmp_path):
    """More files than the old compiled slots (32) ever allowed: 200 of 200 probed and captured."""
    server = HttpsServer(pki.server_context())
    clients = start_clients(tmp_path, server, pki.ca_file, 200)
    try:
        (tmp_path / "rec").mkdir()
        args = [a for proc, _ in clients for a in ("--pid", str(proc.pid))]
        rec = start_recorder(tmp_path / "rec", args=args, timeout=300)
        probed = {lib["path"] for lib in rec.ready["libraries"]}
        assert {str(copy) for _, copy in clients} <= probed
        assert "(uprobe-multi BPF links)" in rec.log
        run_calls(clients)
        assert rec.stop() == 0, rec.log[-3000:]
    finally:
        kill_all(clients)
        server.close()
    check_each_captured_from_its_copy(rec.segments_dir, clients)
    assert "no free library slot" not in rec.log


@pytest.mark.parametrize("mode", ["multi", "links", "slots"])
def test_both_attach_modes_capture_openssl_and_go(mode, pki, tmp_path, tmp_path_factory):
    """attach_mode multi (uprobe-multi links), links (perf-event links with cookies, for kernels 5.15 to
    6.5) and slots (bcc, a compiled copy of the entry probes per file, before 5.15): the same capture,
    each record naming its file."""
    aiclient = build(tmp_path_factory.mktemp("go"), ("aiclient",))["aiclient"]
    server = HttpsServer(pki.server_context())
    clients = start_clients(tmp_path, server, pki.ca_file, 3)
    go = subprocess.Popen([str(aiclient), "-wait", "-base", server.url, "-scenario", "big", "-tag", mode],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                          env={"SSL_CERT_FILE": str(pki.ca_file), "GODEBUG": "http2client=0"})
    try:
        assert "ready" in go.stdout.readline()
        (tmp_path / "rec").mkdir()
        args = [a for proc, _ in clients for a in ("--pid", str(proc.pid))] + ["--pid", str(go.pid)]
        rec = start_recorder(tmp_path / "rec", config={"attach_mode": mode}, args=args)
        run_calls(clients)
        go.communicate("go\n", timeout=120)  # the server answers 404: the bytes are what counts
        assert rec.stop() == 0, rec.log[-3000:]
    finally:
        kill_all(clients + [(go, None)])
        server.close()
    assert {"multi": "(uprobe-multi BPF links)", "links": "(perf-event BPF links)",
            "slots": "library slots, no BPF links"}[mode] in rec.log
    check_each_captured_from_its_copy(rec.segments_dir, clients)
    rows = read_segments(rec.segments_dir).drop_columns(["ts_wall", "process_start"]).to_pylist()
    go_rows = [r for r in rows if r["pid"] == go.pid and r["kind"] == "data"]
    assert {(r["lib_path"], r["tls_stack"]) for r in go_rows} == {(str(aiclient), "go")}
    sent = b"".join(r["data"] for r in go_rows if r["direction"] == "egress")
    assert sent.startswith(b"POST /v1/chat/completions HTTP/1.1") and len(sent) > 1 << 20
    assert json.dumps(rec.final_totals())  # totals logged at exit


def _static_run(program: Path, server: HttpsServer, ca_file: Path, tmp_path: Path, path: str):
    """Run the static client under a recorder that probes only it; (recorder, its answer)."""
    proc = subprocess.Popen([str(program), str(server.port), str(ca_file), path], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        (tmp_path / "rec").mkdir()
        rec = start_recorder(tmp_path / "rec", args=["--pid", str(proc.pid)])
        out, _ = proc.communicate("go\n", timeout=60)
        assert proc.returncode == 0
        assert rec.stop() == 0, rec.log[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    return rec, proc.pid, out.strip()


def test_static_openssl_found_by_its_symbol_table(pki, tmp_path):
    """OpenSSL linked into the program, named in .symtab only (no exports): probed and captured."""
    program = build_static_client(tmp_path)["static"]
    server = HttpsServer(pki.server_context())
    try:
        rec, pid, answer = _static_run(program, server, pki.ca_file, tmp_path, "/static/1")
    finally:
        server.close()
    assert answer == "you asked for /static/1"
    assert str(program) in {lib["path"] for lib in rec.ready["libraries"]}
    table = read_segments(rec.segments_dir)
    rows = [r for r in table.drop_columns(["ts_wall", "process_start"]).to_pylist() if r["pid"] == pid]
    data = [r for r in rows if r["kind"] == "data"]
    assert {(r["lib_path"], r["tls_stack"]) for r in data} == {(str(program), "openssl")}
    (conn,) = {r["conn_id"] for r in data}
    assert stream_bytes(table, conn, "egress") == server.exchanges[0].request
    assert stream_bytes(table, conn, "ingress") == server.exchanges[0].response
    assert {r["kind"] for r in rows} >= {"open", "sni", "socket", "close"}


def test_stripped_static_openssl_is_reported_not_probed(pki, tmp_path):
    """The same program stripped: nothing to attach to. Said once, by file and why, and counted."""
    program = build_static_client(tmp_path)["stripped"]
    server = HttpsServer(pki.server_context())
    try:
        rec, pid, answer = _static_run(program, server, pki.ca_file, tmp_path, "/static/2")
    finally:
        server.close()
    assert answer == "you asked for /static/2"
    said = [line for line in rec.log.splitlines() if "carries OpenSSL's TLS code but no symbols" in line]
    assert len(said) == 1 and str(program) in said[0], rec.log[-3000:]
    totals = rec.final_totals()
    assert totals["tls_files_unsupported"] == 1 and totals["calls"] == 0
    assert not list(rec.segments_dir.glob("*.parquet"))  # nothing was captured, so nothing written
