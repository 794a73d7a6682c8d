"""Python's ssl module (SSL_write_ex / SSL_read_ex) under the real recorder: exact bytes, in order,
per direction, with pid and comm, and no drops, including a 1 MiB write and 1- and 7-byte reads."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import REPO, connections_of, read_segments, stream_bytes
from testbed.https_server import HttpsServer
from testbed.ssl_client import payload

pytestmark = pytest.mark.ebpf

SIZES = [100, 4096, 1 << 20, 23 * 1024, 0]


def test_python_ssl_exact_capture(recorder_factory, pki):
    rec = recorder_factory()
    server = HttpsServer(pki.server_context(), body_for=lambda path, body: payload(20000, len(body)))
    try:
        out = subprocess.run(
            [sys.executable, "-m", "testbed.ssl_client", str(server.port), str(pki.ca_file),
             *map(str, SIZES)],
            cwd=REPO, capture_output=True, text=True, check=True, timeout=120,
        )
    finally:
        server.close()
    truth = json.loads(out.stdout)
    assert rec.stop() == 0, rec.log

    table = read_segments(rec.segments_dir)
    pid = truth["pid"]
    conns = connections_of(table, pid)
    assert len(conns) == 1, conns
    conn = conns[0]
    assert stream_bytes(table, conn, "egress") == bytes.fromhex(truth["sent"])
    assert stream_bytes(table, conn, "ingress") == bytes.fromhex(truth["received"])

    rows = [r for r in table.to_pylist() if r["conn_id"] == conn]
    assert {r["comm"] for r in rows} == {truth["comm"]}
    assert {r["pid"] for r in rows} == {pid}
    # identity rows come before the handshake: the socket (SSL_set_fd) and the server name (SSL_ctrl)
    kinds = [r["kind"] for r in rows]
    assert kinds[:3] == ["socket", "sni", "open"] and kinds[-1] == "close"
    sock, sni = rows[0], rows[1]
    assert sni["server_name"] == "localhost"
    assert sock["socket_source"] == "set_fd" and sock["fd"] >= 0
    assert (sock["peer_ip"], sock["peer_port"]) == ("127.0.0.1", server.port)
    assert sock["local_ip"] == "127.0.0.1" and sock["local_port"] > 0
    # and one process row says who the pid is
    procs = [r for r in table.to_pylist() if r["kind"] == "process" and r["pid"] == pid]
    assert len(procs) == 1 and procs[0]["conn_id"] is None
    assert procs[0]["cmdline"][1:3] == ["-m", "testbed.ssl_client"]
    assert procs[0]["ppid"] == __import__("os").getpid() and procs[0]["exe"].startswith("/")
    assert "gap" not in kinds
    funcs = {r["func"] for r in rows if r["kind"] == "data"}
    assert funcs == {"SSL_write_ex", "SSL_read_ex"}
    # the 1 MiB sendall arrives as chunks of at most 16 KiB, each knowing the call's full length
    big = [r for r in rows if r["kind"] == "data" and r["call_len"] >= 1 << 20]
    assert big and all(r["length"] <= 16384 for r in big)
    close = rows[-1]
    assert close["egress_bytes"] == len(bytes.fromhex(truth["sent"]))
    assert close["ingress_bytes"] == len(bytes.fromhex(truth["received"]))

    # the server side of the same exchange is captured too (it runs in this test process)
    server_conns = [c for c in connections_of(table, __import__("os").getpid())]
    assert any(
        stream_bytes(table, c, "ingress") == bytes.fromhex(truth["sent"]) for c in server_conns
    )

    totals = rec.final_totals()
    assert totals["dropped_bytes"] == 0 and totals["dropped_records"] == 0
    assert totals["truncated_bytes"] == 0 and totals["unexplained_gap_bytes"] == 0
