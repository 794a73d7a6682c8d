"""The decoder and the segment writer on synthetic ring-buffer records (no eBPF needed)."""

from __future__ import annotations

import json
import os
import struct

import pyarrow.parquet as pq
import pytest

from contract import segment_format as sf
from contract import segment_names
from recorder.capture.records import HEADER_SIZE, PLAIN_LIB_ID, SOCKET_INFO, RecordDecoder
from recorder.store.writer import SegmentWriter

SSL, GEN, PID = 0x5555AAAA0000, 7, 4242
HEADER = struct.Struct("<6Q4IH4B2x16s")  # bpf/tls_capture.h, written out independently
assert HEADER.size == HEADER_SIZE


def rec(kind, offset=0, length=0, direction=0, func=2, call_len=None, data=b"", stack=1, lib_id=0):
    header = HEADER.pack(1_000 + offset, SSL, GEN, offset, call_len if call_len is not None else length,
                         99, PID, PID + 1, 1000, length, lib_id, kind, direction, func, stack, b"client\0")
    return header + data


def decode(*raws):
    dec = RecordDecoder("node-a", 10**18, {0: "/lib/libssl.so.3"})
    table = dec.decode(list(raws))
    assert table.schema == sf.SCHEMA
    return dec, table.drop_columns(["ts_wall"]).to_pylist()


def test_data_rows_carry_identity_and_bytes():
    _, rows = decode(rec(3, func=6), rec(1, 0, 5, data=b"hello"))
    assert [r["kind"] for r in rows] == ["open", "data"]
    data = rows[1]
    assert data["data"] == b"hello" and data["stream_offset"] == 0 and data["direction"] == "egress"
    assert data["comm"] == "client" and data["pid"] == PID and data["tid"] == PID + 1
    assert data["conn_id"] == sf.conn_id(PID, SSL, GEN)
    assert data["lib_path"] == "/lib/libssl.so.3" and data["node"] == "node-a"
    assert rows[0]["func"] == "SSL_do_handshake"
    assert {r["tls_stack"] for r in rows} == {"openssl"}


def test_go_records_name_their_stack_functions_and_socket_source():
    socket = SOCKET_INFO.pack(6, 2, 443, bytes([127, 0, 0, 1]) + bytes(12), 3, 0, bytes(16))
    _, rows = decode(rec(3, func=16, stack=2), rec(6, length=len(socket), func=13, data=socket, stack=2),
                     rec(1, 0, 5, func=13, data=b"hello", stack=2), rec(1, 0, 2, direction=1, func=14,
                                                                      data=b"ok", stack=2),
                     rec(4, offset=5, call_len=2, func=15, stack=2), rec(1, 0, 1, data=b"x", stack=7))
    assert [(r["kind"], r["func"], r["tls_stack"]) for r in rows] == [
        ("open", "crypto/tls.(*Conn).clientHandshake", "go"), ("socket", "crypto/tls.(*Conn).Write", "go"),
        ("data", "crypto/tls.(*Conn).Write", "go"), ("data", "crypto/tls.(*Conn).Read", "go"),
        ("close", "crypto/tls.(*Conn).Close", "go"),
        ("data", "SSL_write_ex", None)]  # an unknown stack byte is null, not a guess
    assert (rows[1]["fd"], rows[1]["peer_ip"], rows[1]["peer_port"], rows[1]["socket_source"]) == (
        6, "127.0.0.1", 443, sf.SOCKET_SOURCE_GO_CONN)


def test_plaintext_records_name_the_system_call_and_both_ends():
    """Format 4: plaintext rows (stack 3) have no library, name the system call, and their socket row
    carries the local end the kernel gave (no /proc lookup needed)."""
    peer, local = bytes([10, 0, 0, 2]) + bytes(12), bytes([10, 0, 0, 1]) + bytes(12)
    socket = SOCKET_INFO.pack(7, 2, 8000, peer, 4, 41234, local)
    plain = {"stack": 3, "lib_id": PLAIN_LIB_ID}
    _, rows = decode(rec(3, func=26, **plain), rec(6, length=len(socket), func=26, data=socket, **plain),
                     rec(1, 0, 5, func=20, data=b"POST ", **plain),
                     rec(1, 0, 2, direction=1, func=21, data=b"ok", **plain),
                     rec(4, offset=5, call_len=2, func=28, **plain))
    assert [(r["kind"], r["func"], r["tls_stack"]) for r in rows] == [
        ("open", "connect", "plaintext"), ("socket", "connect", "plaintext"), ("data", "sendto", "plaintext"),
        ("data", "recvfrom", "plaintext"), ("close", "close", "plaintext")]
    assert {r["lib_path"] for r in rows} == {None}
    s = rows[1]
    assert (s["fd"], s["peer_ip"], s["peer_port"], s["local_ip"], s["local_port"], s["socket_source"]) == (
        7, "10.0.0.2", 8000, "10.0.0.1", 41234, sf.SOCKET_SOURCE_SYSCALL)


def test_offset_jump_becomes_unexplained_gap_and_late_kernel_gap_is_not_doubled():
    dec, rows = decode(
        rec(1, 0, 3, data=b"abc"),
        rec(1, 10, 2, data=b"xy"),  # 7 bytes never arrived
        rec(2, 3, 7, func=1),  # the kernel's own gap record, arriving late
    )
    assert [(r["kind"], r["stream_offset"], r["length"]) for r in rows] == [
        ("data", 0, 3), ("gap", 3, 7), ("data", 10, 2)]
    assert rows[1]["gap_reason"] == sf.GAP_UNEXPLAINED
    assert dec.unexplained_gap_bytes == 7


def test_kernel_gap_keeps_its_reason():
    _, rows = decode(rec(1, 0, 3, data=b"abc"), rec(2, 3, 100, func=2), rec(1, 103, 1, data=b"z"))
    assert [r["gap_reason"] for r in rows] == [None, sf.GAP_OVER_LIMIT, None]


def test_close_reports_lost_tail_of_each_direction():
    close = rec(4, offset=8, func=5, call_len=4)  # egress total 8, ingress total 4
    dec, rows = decode(rec(1, 0, 5, data=b"hello"), close)
    gaps = [(r["direction"], r["stream_offset"], r["length"]) for r in rows if r["kind"] == "gap"]
    assert gaps == [("egress", 5, 3), ("ingress", 0, 4)]
    assert rows[-1]["kind"] == "close" and rows[-1]["egress_bytes"] == 8 and rows[-1]["ingress_bytes"] == 4


def test_short_or_unknown_records_are_counted_not_fatal():
    dec, rows = decode(b"\x00" * 10, rec(9), rec(1, 0, 5, data=b"hi"))  # truncated payload
    assert rows == []
    assert dec.malformed_records == 3


def test_writer_rotates_and_publishes_atomically(tmp_path):
    w = SegmentWriter(tmp_path, "node-a", "run1", {0: "/lib/libssl.so.3"}, max_bytes=1, max_seconds=3600)
    w.stats_provider = lambda: {"dropped_bytes": 0}
    for i in range(3):
        w.write(RecordDecoder("node-a", 0, {}).decode([rec(1, 0, 5, data=b"%05d" % i)]))
    assert w.close() is None  # max_bytes=1: every write already rotated
    files = sorted(tmp_path.iterdir())
    assert [f.suffix for f in files] == [".parquet"] * 3
    for f in files:
        assert f.stat().st_mode & 0o777 == 0o600
        meta = pq.read_metadata(f).metadata
        assert meta[sf.META_VERSION] == sf.FORMAT_VERSION.encode()
        assert json.loads(meta[sf.META_LIBRARIES]) == {"0": "/lib/libssl.so.3"}
        stats = json.loads(meta[sf.META_STATS])  # the caller's totals, and the writer's own counters
        assert stats["dropped_bytes"] == 0 and stats["write_failed_batches"] == 0
    table = pq.read_table(files[0])
    assert table.schema.field("comm").type == sf.SCHEMA.field("comm").type  # dictionary-encoded


def test_in_progress_segment_is_invisible_to_globs(tmp_path):
    w = SegmentWriter(tmp_path, "n", "r", {}, max_bytes=1 << 30, max_seconds=3600)
    w.write(RecordDecoder("n", 0, {}).decode([rec(1, 0, 2, data=b"hi")]))
    assert list(tmp_path.glob("*.parquet")) == []
    (hidden,) = os.listdir(tmp_path)
    assert hidden.startswith(".") and hidden.endswith(segment_names.IN_PROGRESS_SUFFIX)
    final = w.close()
    assert list(tmp_path.glob("*.parquet")) == [final]


@pytest.mark.parametrize("value", [0, -5, True, "x"])
def test_config_rejects_bad_numbers(value, tmp_path):
    from recorder.config import ConfigError, load_config

    path = tmp_path / "c.yaml"
    path.write_text(json.dumps({"recorder": {"segments_dir": "/tmp/x", "segment_max_seconds": value}}))
    with pytest.raises(ConfigError, match="segment_max_seconds"):
        load_config(path, {})


def test_flags_override_file(tmp_path):
    from recorder.config import load_config

    path = tmp_path / "c.yaml"
    path.write_text("recorder:\n  segments_dir: /from/file\n  comms: [a]\n")
    cfg = load_config(path, {"segments_dir": tmp_path / "flag", "comms": ()})
    assert cfg.segments_dir == tmp_path / "flag"
    assert cfg.comms == ["a"]  # an empty flag tuple does not erase the file's list
