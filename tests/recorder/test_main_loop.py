"""The pieces of the recorder's main loop that need no eBPF: pending records and when they are
decoded, the process rows each segment carries, the totals, the ready file's content."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pyarrow as pa

from contract import segment_format as sf
from contract.identity import ProcessIdentity
from recorder.capture.libraries import LibraryFile
from recorder.capture.probes import AttachedLibrary
from recorder.identity.processes import ProcessInfo, process_rows
from recorder.main_loop import MAX_BATCH_BYTES, PendingRecords, SegmentProcesses, capture_totals, flush_due
from recorder.run import ready_info


def test_pending_records_are_taken_whole():
    pending = PendingRecords()
    pending.add(b"abc")
    pending.add(b"de")
    assert pending.nbytes == 5
    assert pending.take() == [b"abc", b"de"]
    assert (pending.records, pending.nbytes, pending.take()) == ([], 0, [])


def test_a_batch_is_decoded_on_its_timer_or_when_large():
    assert not flush_due(now=10.4, last_flush=10.0, flush_interval=0.5, pending_bytes=1000)
    assert flush_due(now=10.5, last_flush=10.0, flush_interval=0.5, pending_bytes=0)
    assert flush_due(now=10.1, last_flush=10.0, flush_interval=0.5, pending_bytes=MAX_BATCH_BYTES)


def data_rows(*pids: int) -> pa.Table:
    n = len(pids)
    cols = {f.name: pa.nulls(n, f.type) for f in sf.SCHEMA}
    cols["kind"] = pa.array(["data"] * n).cast(sf.SCHEMA.field("kind").type)
    cols["pid"] = pa.array(pids, sf.SCHEMA.field("pid").type)
    return pa.Table.from_pydict(cols, schema=sf.SCHEMA)


def test_each_segment_describes_its_processes_once():
    asked = []

    def rows(pids):
        asked.append(sorted(pids))
        infos = [ProcessInfo(p, "curl", 0, 1, 1, identity=ProcessIdentity(exe="/usr/bin/curl")) for p in pids]
        return process_rows(infos, "node-a")

    processes = SegmentProcesses(rows, segments_written=3)
    first = processes.add_to(data_rows(7, 8, 7), segments_written=3)
    assert first.column("kind").to_pylist() == ["process", "process", "data", "data", "data"]
    assert first.column("exe").to_pylist()[:2] == ["/usr/bin/curl"] * 2
    again = processes.add_to(data_rows(7, 9), segments_written=3)  # 9 is new to this segment
    assert again.column("pid").to_pylist() == [9, 7, 9]
    # a new segment describes them all again
    assert processes.add_to(data_rows(7), segments_written=4).num_rows == 2
    assert asked == [[7, 8], [9], [7]]


def test_totals_add_the_writer_and_decoder_counts_to_the_programs():
    decoder = SimpleNamespace(unexplained_gap_bytes=5, malformed_records=1)
    program = {"records": 10, "dropped": 0}
    totals = capture_totals(program, {"segments_written": 2}, decoder)
    assert totals == {"records": 10, "dropped": 0, "segments_written": 2, "unexplained_gap_bytes": 5,
                      "malformed_records": 1}
    assert program == {"records": 10, "dropped": 0}


def test_ready_file_names_the_probed_libraries_and_the_metrics_port():
    lib = LibraryFile("/proc/1/root/usr/lib/libssl.so.3", "/usr/lib/libssl.so.3", 1, 2, "ldconfig")
    attached = [AttachedLibrary(0, lib, symbols=["SSL_write", "SSL_read"])]
    info = ready_info(42, "9abc", attached, None)
    assert json.loads(json.dumps(info)) == {
        "pid": 42, "run_id": "9abc",
        "libraries": [{"lib_id": 0, "path": "/usr/lib/libssl.so.3", "tls_stack": "openssl",
                       "symbols": ["SSL_write", "SSL_read"]}]}
    with_port = ready_info(42, "9abc", attached, 9464)
    assert list(with_port) == ["pid", "run_id", "libraries", "metrics_port"]
    assert with_port["metrics_port"] == 9464
