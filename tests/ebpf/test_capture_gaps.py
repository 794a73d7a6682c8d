"""What cannot be captured is explicit: a full ring buffer and the per-call limit become gap rows
at the right stream offsets, and the running totals count every missing byte."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import REPO, connections_of, read_segments

pytestmark = pytest.mark.ebpf


def run_client(server_port: int, ca_file, *sizes: int) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "testbed.ssl_client", str(server_port), str(ca_file), *map(str, sizes)],
        cwd=REPO, capture_output=True, text=True, check=True, timeout=120,
    )
    return json.loads(out.stdout)


def egress_rows(table, pid):
    (conn,) = connections_of(table, pid)
    rows = [r for r in table.to_pylist() if r["conn_id"] == conn and r["direction"] == "egress"]
    return sorted(rows, key=lambda r: r["stream_offset"])


def check_coverage(rows, sent: bytes) -> int:
    """Data and gap rows tile the stream exactly; data rows hold the true bytes. Returns gap bytes."""
    pos = gap = 0
    for r in rows:
        assert r["stream_offset"] == pos
        if r["kind"] == "data":
            assert r["data"] == sent[pos:pos + r["length"]]
        else:
            gap += r["length"]
        pos += r["length"]
    assert pos == len(sent)
    return gap


def test_over_limit_becomes_gap(recorder_factory, pki):
    from testbed.https_server import HttpsServer

    rec = recorder_factory(config={"chunk_size": 16384, "max_chunks_per_call": 2})
    server = HttpsServer(pki.server_context())
    try:
        truth = run_client(server.port, pki.ca_file, 100_000)
    finally:
        server.close()
    assert rec.stop() == 0, rec.log
    rows = egress_rows(read_segments(rec.segments_dir), truth["pid"])
    sent = bytes.fromhex(truth["sent"])
    gap = check_coverage(rows, sent)
    gaps = [r for r in rows if r["kind"] == "gap"]
    assert [g["gap_reason"] for g in gaps] == ["over_capture_limit"]
    assert gap == len(sent) - 32768
    assert rec.final_totals()["truncated_bytes"] == gap


def test_full_ring_buffer_becomes_gap(recorder_factory, pki):
    from testbed.https_server import HttpsServer

    # 16 pages hold three 16 KiB chunks: a 1 MiB write overflows it within one call
    rec = recorder_factory(config={"ringbuf_bytes": 65536})
    server = HttpsServer(pki.server_context())
    try:
        truth = run_client(server.port, pki.ca_file, 1 << 20)
    finally:
        server.close()
    assert rec.stop() == 0, rec.log
    rows = egress_rows(read_segments(rec.segments_dir), truth["pid"])
    sent = bytes.fromhex(truth["sent"])
    gap = check_coverage(rows, sent)
    assert gap > 0
    reasons = {r["gap_reason"] for r in rows if r["kind"] == "gap"}
    assert reasons <= {"ringbuf_full", "unexplained"}
    totals = rec.final_totals()
    # every byte missing from this stream was counted as dropped (other streams may drop too)
    assert totals["dropped_bytes"] >= gap
    assert totals["dropped_records"] >= 1
