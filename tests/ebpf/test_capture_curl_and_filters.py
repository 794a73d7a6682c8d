"""curl (libcurl on libssl's SSL_write/SSL_read) under the real recorder, and capture filters."""

from __future__ import annotations

import os
import subprocess

import pytest

from conftest import read_segments, stream_bytes
from testbed.https_server import HttpsServer

pytestmark = pytest.mark.ebpf


def curl(server: HttpsServer, ca_file, path: str, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["curl", "-sS", "--http1.1", "--cacert", str(ca_file), *extra, f"{server.url}{path}"],
        capture_output=True, check=True, timeout=60,
    )


def test_curl_is_captured(recorder_factory, pki):
    rec = recorder_factory()
    server = HttpsServer(pki.server_context())
    try:
        out = curl(server, pki.ca_file, "/hello-from-curl", "-d", "x" * 5000)
    finally:
        server.close()
    assert out.stdout == b"you asked for /hello-from-curl"
    assert rec.stop() == 0, rec.log

    table = read_segments(rec.segments_dir)
    rows = [r for r in table.to_pylist() if r["comm"] == "curl"]
    assert rows, "no rows from curl"
    procs = [r for r in rows if r["kind"] == "process"]
    assert len(procs) == 1 and procs[0]["exe"].endswith("/curl")
    assert "/hello-from-curl" in procs[0]["cmdline"][-1]
    conns = {r["conn_id"] for r in rows if r["kind"] != "process"}
    assert len(conns) == 1
    conn = conns.pop()
    # curl names the server (SNI); it gives libssl its own BIO, not the fd (curl 7.88), so the socket
    # is the handshaking thread's last connect(): the server's address
    sni = [r["server_name"] for r in rows if r["kind"] == "sni"]
    assert sni == ["localhost"]
    sockets = [r for r in rows if r["kind"] == "socket"]
    assert len(sockets) == 1 and sockets[0]["socket_source"] in ("set_fd", "thread_connect")
    assert (sockets[0]["peer_ip"], sockets[0]["peer_port"]) == ("127.0.0.1", server.port)
    sent = stream_bytes(table, conn, "egress")
    received = stream_bytes(table, conn, "ingress")
    assert sent.startswith(b"POST /hello-from-curl HTTP/1.1\r\n")
    assert sent.endswith(b"\r\n\r\n" + b"x" * 5000)
    assert received == server.exchanges[0].response
    assert sent == server.exchanges[0].request
    assert {r["func"] for r in rows if r["kind"] == "data"} <= {"SSL_write", "SSL_read", "SSL_write_ex",
                                                              "SSL_read_ex"}


def test_comm_filter_captures_only_that_command(recorder_factory, pki):
    rec = recorder_factory(args=["--comm", "curl"])
    server = HttpsServer(pki.server_context())  # Python ssl in this process: must not be captured
    try:
        curl(server, pki.ca_file, "/only-curl")
    finally:
        server.close()
    assert rec.stop() == 0, rec.log
    table = read_segments(rec.segments_dir)
    assert set(table.column("comm").to_pylist()) == {"curl"}


def test_pid_filter_excludes_other_processes(recorder_factory, pki):
    # a pid that is not curl's: nothing from curl may be recorded
    rec = recorder_factory(args=["--pid", "1"])
    server = HttpsServer(pki.server_context())
    try:
        curl(server, pki.ca_file, "/nobody-listens")
    finally:
        server.close()
    assert rec.stop() == 0, rec.log
    assert not list(rec.segments_dir.glob("*.parquet"))  # no rows, so no segment was opened
    assert rec.final_totals()["calls"] == 0


def test_cgroup_filter_captures_only_that_cgroup(recorder_factory, pki):
    from recorder.identity.cgroups import cgroup2_root

    cgroup = cgroup2_root() / f"oisp-test-{os.getpid()}"
    cgroup.mkdir()
    cgroup_id = cgroup.stat().st_ino
    try:
        rec = recorder_factory(args=["--cgroup", f"/{cgroup.name}"])
        server = HttpsServer(pki.server_context())
        try:
            inside = (f"echo $$ > {cgroup}/cgroup.procs && exec curl -sS --http1.1 --cacert {pki.ca_file} "
                      f"{server.url}/inside")
            subprocess.run(["sh", "-c", inside], check=True, capture_output=True, timeout=60)
            curl(server, pki.ca_file, "/outside")
        finally:
            server.close()
        assert rec.stop() == 0, rec.log
    finally:
        cgroup.rmdir()
    table = read_segments(rec.segments_dir)
    rows = table.to_pylist()
    assert {r["comm"] for r in rows} == {"curl"}
    assert {r["cgroup_id"] for r in rows} == {cgroup_id}
    sent = b"".join(r["data"] for r in rows if r["kind"] == "data" and r["direction"] == "egress")
    assert b"GET /inside " in sent and b"/outside" not in sent


def test_unknown_cgroup_is_a_clear_error(tmp_path):
    from conftest import BIN

    out = subprocess.run([str(BIN / "oisp-record"), "--segments-dir", str(tmp_path / "s"), "--cgroup",
                          "/no-such-cgroup-here"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 1
    assert "cgroup /no-such-cgroup-here not found" in out.stderr and "Traceback" not in out.stderr
