"""Decode ring-buffer records (bpf/tls_capture.h) into segment columns.

Decoding is done in batches, off the ring-buffer callback, which only copies bytes. Besides
decoding, this is where a lost record becomes explicit: the recorder tracks the next expected
offset of every connection-direction stream and writes a gap row for any jump the kernel could not
report itself (its own gap record found no room either).
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from dataclasses import dataclass, field

import pyarrow as pa

from . import segment_format as sf

# struct record_header: 6 u64, 4 u32, u16, 3 u8, 3 pad, char[16]
HEADER = struct.Struct("<6Q4IH3B3x16s")
assert HEADER.size == 88

_KINDS = {1: sf.KIND_DATA, 2: sf.KIND_GAP, 3: sf.KIND_OPEN, 4: sf.KIND_CLOSE}
_DIRS = {0: sf.DIRECTION_EGRESS, 1: sf.DIRECTION_INGRESS}
_FUNCS = {
    1: "SSL_write", 2: "SSL_write_ex", 3: "SSL_read", 4: "SSL_read_ex",
    5: "SSL_free", 6: "SSL_do_handshake", 7: "SSL_connect", 8: "SSL_accept",
}
_GAPS = {1: sf.GAP_RINGBUF_FULL, 2: sf.GAP_OVER_LIMIT, 3: sf.GAP_READ_FAULT}

# How many streams' expected offsets to remember (oldest forgotten first).
MAX_TRACKED_STREAMS = 200_000


@dataclass
class Columns:
    """Column lists for one batch, in segment schema order."""

    names: tuple[str, ...] = tuple(sf.SCHEMA.names)
    cols: dict[str, list] = field(default_factory=lambda: {n: [] for n in sf.SCHEMA.names})
    payload_bytes: int = 0

    def __len__(self) -> int:
        return len(self.cols["kind"])

    def to_table(self) -> pa.Table:
        return pa.Table.from_pydict(self.cols, schema=sf.SCHEMA)


class RecordDecoder:
    """Turns raw records into rows; remembers stream offsets across batches."""

    def __init__(self, node: str, mono_to_wall_ns: int, lib_paths: dict[int, str]):
        self.node = node
        self.mono_to_wall_ns = mono_to_wall_ns
        self.lib_paths = lib_paths
        self.expected: OrderedDict[tuple, int] = OrderedDict()
        self.unexplained_gap_bytes = 0
        self.malformed_records = 0

    def _row(self, out: Columns, h: tuple, kind: str, **extra) -> None:
        ts_mono, ssl, gen, offset, call_len, cgroup, pid, tid, uid, length, lib_id, _k, d, func, comm = h
        c = out.cols
        c["kind"].append(kind)
        c["ts_wall"].append(ts_mono + self.mono_to_wall_ns)
        c["ts_mono_ns"].append(ts_mono)
        c["node"].append(self.node)
        c["pid"].append(pid)
        c["tid"].append(tid)
        c["uid"].append(uid)
        c["comm"].append(comm.split(b"\0", 1)[0].decode("utf-8", "replace"))
        c["cgroup_id"].append(cgroup)
        c["conn_id"].append(sf.conn_id(pid, ssl, gen))
        c["ssl_ptr"].append(ssl)
        c["conn_gen"].append(gen)
        c["lib_path"].append(self.lib_paths.get(lib_id, f"lib#{lib_id}"))
        for name in ("direction", "func", "stream_offset", "length", "call_len", "data",
                     "gap_reason", "egress_bytes", "ingress_bytes"):
            c[name].append(extra.get(name))

    def _stream_jump(self, out: Columns, h: tuple, key: tuple, offset: int, default=None) -> None:
        expected = self.expected.get(key, default)
        if expected is not None and offset > expected:
            missing = offset - expected
            self.unexplained_gap_bytes += missing
            self._row(out, h, sf.KIND_GAP, direction=_DIRS[h[12]], func=None, stream_offset=expected,
                      length=missing, call_len=None, gap_reason=sf.GAP_UNEXPLAINED)

    def _advance(self, key: tuple, end: int) -> None:
        if self.expected.get(key, -1) < end:
            self.expected[key] = end
            self.expected.move_to_end(key)
            if len(self.expected) > MAX_TRACKED_STREAMS:
                self.expected.popitem(last=False)

    def decode(self, raws: list[bytes], out: Columns) -> None:
        for raw in raws:
            if len(raw) < HEADER.size:
                self.malformed_records += 1
                continue
            h = HEADER.unpack_from(raw)
            kind = _KINDS.get(h[11])
            if kind is None:
                self.malformed_records += 1
                continue
            _ts, ssl, gen, offset, call_len, _cg, pid, _tid, _uid, length, _lib, _k, direction, func, _c = h
            if kind == sf.KIND_DATA:
                data = raw[HEADER.size:HEADER.size + length]
                if len(data) != length:
                    self.malformed_records += 1
                    continue
                key = (pid, ssl, gen, direction)
                self._stream_jump(out, h, key, offset)
                self._row(out, h, kind, direction=_DIRS[direction], func=_FUNCS.get(func),
                          stream_offset=offset, length=length, call_len=call_len, data=data)
                self._advance(key, offset + length)
                out.payload_bytes += length
            elif kind == sf.KIND_GAP:
                key = (pid, ssl, gen, direction)
                end = offset + length
                if self.expected.get(key, -1) >= end:
                    continue  # already written as an unexplained gap
                self._stream_jump(out, h, key, offset)
                self._row(out, h, kind, direction=_DIRS[direction], func=None, stream_offset=offset,
                          length=length, call_len=call_len, gap_reason=_GAPS.get(func, sf.GAP_UNEXPLAINED))
                self._advance(key, end)
            elif kind == sf.KIND_OPEN:
                self._row(out, h, kind, func=_FUNCS.get(func))
            else:  # close: offset = egress total, call_len = ingress total
                # bytes up to the final totals that never arrived (all of them if none did)
                for d, total in ((0, offset), (1, call_len)):
                    self._stream_jump(out, h[:12] + (d,) + h[13:], (pid, ssl, gen, d), total, default=0)
                    self.expected.pop((pid, ssl, gen, d), None)
                self._row(out, h, kind, func=_FUNCS.get(func), egress_bytes=offset, ingress_bytes=call_len)
