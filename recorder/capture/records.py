"""Decode ring-buffer records (bpf/tls_capture.h) into segment tables, a batch at a time.

The ring-buffer callback only copies bytes; everything else happens here, vectorized: the fixed
headers of a whole batch are read as one numpy structured array, and string columns are built as
dictionaries from their few distinct values. At 40,000 records a second a per-row Python loop was
what made the recorder fall behind (docs/performance.md).

This is also where a lost record becomes explicit: the decoder remembers the next expected offset of
every connection-direction stream and writes a gap row for any jump the kernel could not report
itself (when even its small gap record found no room), and for a tail that never arrived before
`SSL_free`.
"""

from __future__ import annotations

import ipaddress
import struct
from collections import OrderedDict
from collections.abc import Callable

import numpy as np
import pyarrow as pa

from contract import segment_format as sf

# struct record_header: 6 u64, 4 u32, u16, 4 u8, 2 pad, char[16]
HEADER_DTYPE = np.dtype([
    ("ts_mono_ns", "<u8"), ("ssl", "<u8"), ("conn_gen", "<u8"), ("offset", "<u8"), ("call_len", "<u8"),
    ("cgroup_id", "<u8"), ("pid", "<u4"), ("tid", "<u4"), ("uid", "<u4"), ("len", "<u4"),
    ("lib_id", "<u2"), ("kind", "u1"), ("dir", "u1"), ("func", "u1"), ("stack", "u1"), ("pad", "V2"),
    ("comm", "S16"),
])
HEADER_SIZE = HEADER_DTYPE.itemsize
assert HEADER_SIZE == 88

K_DATA, K_GAP, K_OPEN, K_CLOSE, K_SNI, K_SOCKET = 1, 2, 3, 4, 5, 6
K_EXEC, K_EXIT, K_LIBOPEN, K_HELD = 7, 8, 9, 10  # proc_events ring buffer only
# code -> string tables; index 0 ("?") is never a valid code, and never referenced by a row
KINDS = ["?", sf.KIND_DATA, sf.KIND_GAP, sf.KIND_OPEN, sf.KIND_CLOSE, sf.KIND_SNI, sf.KIND_SOCKET]
DIRECTIONS = [sf.DIRECTION_EGRESS, sf.DIRECTION_INGRESS]
FUNCS = ["?", "SSL_write", "SSL_write_ex", "SSL_read", "SSL_read_ex", "SSL_free", "SSL_do_handshake",
         "SSL_connect", "SSL_accept", "SSL_ctrl", "SSL_set_fd", "SSL_set_rfd", "SSL_set_wfd",
         "crypto/tls.(*Conn).Write", "crypto/tls.(*Conn).Read", "crypto/tls.(*Conn).Close",
         "crypto/tls.(*Conn).clientHandshake", "crypto/tls.(*Conn).serverHandshake",
         # plaintext (the system call)
         "write", "read", "sendto", "recvfrom", "writev", "readv", "sendmsg", "recvmsg", "connect", "accept",
         "close"]
STACKS = ["?", sf.TLS_STACK_OPENSSL, sf.TLS_STACK_GO, sf.TLS_STACK_PLAINTEXT]
PLAIN_LIB_ID = 65535  # plaintext records: no library (bpf/tls_capture.c)
# struct socket_info: s32 fd, u16 family, u16 port, u8 addr[16], u8 source, u8 pad[5], u16 local_port,
# u8 local_addr[16]
SOCKET_INFO = struct.Struct("<iHH16sB5xH16s")
SOCKET_SOURCES = {1: sf.SOCKET_SOURCE_SET_FD, 2: sf.SOCKET_SOURCE_THREAD_CONNECT, 3: sf.SOCKET_SOURCE_GO_CONN,
                  4: sf.SOCKET_SOURCE_SYSCALL}
AF_INET, AF_INET6 = 2, 10
# (pid, fd) -> (local ip, local port, peer ip, peer port) from the socket tables, or None
SocketResolver = Callable[[int, int], tuple[str, int, str, int] | None]


def parse_socket_info(payload: bytes) -> dict:
    """The socket columns of a SOCKET record's payload."""
    fd, family, port, addr, source, local_port, local_addr = SOCKET_INFO.unpack_from(payload)
    peer_ip = _ip(family, addr)
    info = {"fd": fd if fd >= 0 else None, "peer_ip": peer_ip, "peer_port": port if peer_ip else None,
            "socket_source": SOCKET_SOURCES.get(source)}
    if local_port:  # the kernel's own view of the local end (plaintext)
        info["local_ip"], info["local_port"] = _ip(family, local_addr), local_port
    return info


def _ip(family: int, addr: bytes) -> str | None:
    if family == AF_INET:
        return str(ipaddress.IPv4Address(addr[:4]))
    if family == AF_INET6:
        ip6 = ipaddress.IPv6Address(addr)
        return str(ip6.ipv4_mapped or ip6)
    return None
GAP_REASONS = [sf.GAP_UNEXPLAINED, sf.GAP_RINGBUF_FULL, sf.GAP_OVER_LIMIT, sf.GAP_READ_FAULT]

# How many streams' expected offsets to remember (oldest forgotten first).
MAX_TRACKED_STREAMS = 200_000


def _dict_column(codes: np.ndarray, table: list, valid: np.ndarray | None = None) -> pa.Array:
    """A dictionary array from small integer codes and their strings."""
    idx = pa.array(codes.astype(np.int32), mask=None if valid is None else ~valid)
    return pa.DictionaryArray.from_arrays(idx, pa.array(table, pa.string()))


def _dict_from_values(values: np.ndarray, to_str) -> pa.Array:
    """A dictionary array from raw values, converting only the distinct ones to strings."""
    uniq, inverse = np.unique(values, return_inverse=True)
    names = [to_str(u) for u in uniq]
    indices = inverse.astype(np.int32)
    missing = np.array([n is None for n in names])[indices] if None in names else None  # null rows
    return pa.DictionaryArray.from_arrays(pa.array(indices, mask=missing),
                                          pa.array([n or "" for n in names], pa.string()))


class RecordDecoder:
    """Turns batches of raw records into segment tables; remembers stream offsets across batches."""

    def __init__(self, node: str, mono_to_wall_ns: int, lib_paths: dict[int, str],
                 resolve_socket: SocketResolver | None = None):
        self.node = node
        self.resolve_socket = resolve_socket
        self.mono_to_wall_ns = mono_to_wall_ns
        self.lib_paths = lib_paths
        self.expected: OrderedDict[tuple, int] = OrderedDict()
        self.unexplained_gap_bytes = 0
        self.malformed_records = 0

    def decode(self, raws: list[bytes]) -> pa.Table:
        good = [r for r in raws if len(r) >= HEADER_SIZE]
        self.malformed_records += len(raws) - len(good)
        if not good:
            return sf.SCHEMA.empty_table()
        h = np.frombuffer(b"".join([r[:HEADER_SIZE] for r in good]), dtype=HEADER_DTYPE)
        kind = h["kind"]
        lengths = h["len"].tolist()
        # data, sni and socket rows must hold `len` bytes; unknown kinds and short records are malformed
        data = [r[HEADER_SIZE:HEADER_SIZE + n] if k == K_DATA or k == K_SNI or k == K_SOCKET else None
                for r, n, k in zip(good, lengths, kind.tolist(), strict=True)]
        ok = (kind >= K_DATA) & (kind <= K_SOCKET)
        ok &= np.array([d is None or len(d) == n for d, n in zip(data, lengths, strict=True)], dtype=bool)
        ok &= (kind != K_SOCKET) | (h["len"] == SOCKET_INFO.size)
        if not ok.all():
            self.malformed_records += int((~ok).sum())
            keep = np.flatnonzero(ok)
            h = h[keep]
            data = [data[i] for i in keep.tolist()]
            if len(h) == 0:
                return sf.SCHEMA.empty_table()
        extra, keep_rows = self._track_offsets(h)
        table = self._table(h, data)
        if keep_rows is not None:  # kernel gap records already covered by our own gap rows
            table = table.filter(pa.array(keep_rows))
        if extra:
            table = self._insert_rows(table, extra, keep_rows)
        return table

    def _track_offsets(self, h: np.ndarray):
        """Walk data/gap/close rows in order; returns gap rows to insert (before index) and a mask of
        rows to keep (None when all are kept)."""
        extra: list[tuple[int, dict]] = []
        keep: list[bool] | None = None
        kind = h["kind"].tolist()
        pid, ssl, gen, d = h["pid"].tolist(), h["ssl"].tolist(), h["conn_gen"].tolist(), h["dir"].tolist()
        offset, length, call_len = h["offset"].tolist(), h["len"].tolist(), h["call_len"].tolist()
        expected = self.expected
        for i, k in enumerate(kind):
            if k == K_OPEN or k == K_SNI or k == K_SOCKET:
                continue
            if k == K_CLOSE:
                # bytes up to the final totals that never arrived (all of them if none did)
                for direction, total in ((0, offset[i]), (1, call_len[i])):
                    key = (pid[i], ssl[i], gen[i], direction)
                    have = expected.pop(key, 0)
                    if total > have:
                        extra.append((i, self._gap_row(h[i], direction, have, total - have)))
                continue
            key = (pid[i], ssl[i], gen[i], d[i])
            have = expected.get(key)
            start, end = offset[i], offset[i] + length[i]
            if have is not None and end <= have and k == K_GAP:
                if keep is None:
                    keep = [True] * len(kind)
                keep[i] = False  # the kernel's late gap record: already written as unexplained
                continue
            if have is not None and start > have:
                extra.append((i, self._gap_row(h[i], d[i], have, start - have)))
            if have is None or end > have:
                expected[key] = end
                expected.move_to_end(key)
                if len(expected) > MAX_TRACKED_STREAMS:
                    expected.popitem(last=False)
        return extra, keep

    def _gap_row(self, rec, direction: int, offset: int, missing: int) -> dict:
        self.unexplained_gap_bytes += missing
        return {"rec": rec, "direction": direction, "offset": offset, "length": missing}

    def _table(self, h: np.ndarray, data: list) -> pa.Table:
        kind = h["kind"]
        is_data = kind == K_DATA
        is_gap = kind == K_GAP
        is_stream = is_data | is_gap
        is_close = kind == K_CLOSE
        meta = np.flatnonzero((kind == K_SNI) | (kind == K_SOCKET))
        meta_set = set(meta.tolist())
        ts = h["ts_mono_ns"].astype(np.int64)
        n = len(h)
        # func byte: FN_* for data/open/close, GAP_* reason for gaps
        func_codes = np.where(is_gap, 0, h["func"]).astype(np.int32)
        func_valid = ~is_gap & (func_codes > 0) & (func_codes < len(FUNCS))
        gap_codes = np.where(is_gap & (h["func"] < len(GAP_REASONS)), h["func"], 0)
        stack_valid = (h["stack"] > 0) & (h["stack"] < len(STACKS))
        conn = np.empty(n, dtype=[("pid", "<u4"), ("ssl", "<u8"), ("gen", "<u8")])
        conn["pid"], conn["ssl"], conn["gen"] = h["pid"], h["ssl"], h["conn_gen"]
        lib_paths = self.lib_paths
        cols = {
            "kind": _dict_column(kind, KINDS),
            "ts_wall": pa.array(ts + self.mono_to_wall_ns, pa.timestamp("ns", tz="UTC")),
            "ts_mono_ns": pa.array(ts),
            "node": _dict_column(np.zeros(n, np.int32), [self.node]),
            "pid": pa.array(h["pid"].astype(np.int32)),
            "tid": pa.array(h["tid"].astype(np.int32)),
            "uid": pa.array(h["uid"].astype(np.int64)),
            "comm": _dict_from_values(h["comm"], lambda c: c.split(b"\0", 1)[0].decode("utf-8", "replace")),
            "cgroup_id": pa.array(h["cgroup_id"]),
            "conn_id": _dict_from_values(conn, lambda c: sf.conn_id(int(c[0]), int(c[1]), int(c[2]))),
            "ssl_ptr": pa.array(h["ssl"]),
            "conn_gen": pa.array(h["conn_gen"]),
            "direction": _dict_column(h["dir"] & 1, DIRECTIONS, is_stream),
            "func": _dict_column(np.where(func_valid, func_codes, 0), FUNCS, func_valid),
            "stream_offset": pa.array(h["offset"], mask=~is_stream),
            "length": pa.array(h["len"], mask=~is_stream),
            "call_len": pa.array(h["call_len"], mask=~is_stream),
            "data": pa.array(data, pa.binary()) if not meta.size else
                    pa.array([None if i in meta_set else d for i, d in enumerate(data)], pa.binary()),
            "gap_reason": _dict_column(gap_codes, GAP_REASONS, is_gap),
            "egress_bytes": pa.array(h["offset"], mask=~is_close),
            "ingress_bytes": pa.array(h["call_len"], mask=~is_close),
            "lib_path": _dict_from_values(h["lib_id"], lambda i: None if i == PLAIN_LIB_ID
                                          else lib_paths.get(int(i), f"lib#{int(i)}")),
            "tls_stack": _dict_column(np.where(stack_valid, h["stack"], 0), STACKS, stack_valid),
        }
        cols.update(self._identity_columns(h, data, meta, n))
        ordered = {f.name: cols[f.name] if f.name in cols else pa.nulls(n, f.type) for f in sf.SCHEMA}
        return pa.Table.from_pydict(ordered).cast(sf.SCHEMA)

    def _identity_columns(self, h: np.ndarray, data: list, meta: np.ndarray, n: int) -> dict:
        """server_name and socket columns of the (few) sni and socket rows; null elsewhere."""
        if not meta.size:
            return {}
        names = ["server_name", "fd", "peer_ip", "peer_port", "local_ip", "local_port", "socket_source"]
        cols: dict[str, list] = {name: [None] * n for name in names}
        for i in meta.tolist():
            payload = data[i]
            if h["kind"][i] == K_SNI:
                cols["server_name"][i] = payload.decode("utf-8", "replace")
                continue
            info = parse_socket_info(payload)
            if info["fd"] is not None and self.resolve_socket is not None and "local_port" not in info:
                found = self.resolve_socket(int(h["pid"][i]), info["fd"])
                if found:
                    info["local_ip"], info["local_port"] = found[0], found[1]
                    if info["peer_ip"] is None:  # e.g. an accepted socket: no connect() of ours
                        info["peer_ip"], info["peer_port"] = found[2], found[3]
            for key, value in info.items():
                cols[key][i] = value
        return {name: pa.array(values) for name, values in cols.items()}

    def _insert_rows(self, table: pa.Table, extra: list[tuple[int, dict]], keep: list[bool] | None):
        """Put the gap rows the decoder found just before the row that revealed them."""
        recs = np.array([e[1]["rec"] for e in extra], dtype=HEADER_DTYPE)
        recs["kind"] = K_GAP
        recs["func"] = 0  # GAP_REASONS[0]: unexplained
        recs["dir"] = [e[1]["direction"] for e in extra]
        recs["offset"] = [e[1]["offset"] for e in extra]
        recs["len"] = [e[1]["length"] for e in extra]
        recs["call_len"] = 0
        gaps = self._table(recs, [None] * len(extra)).set_column(
            sf.SCHEMA.get_field_index("call_len"), "call_len", pa.nulls(len(extra), pa.uint64()))
        # order keys: original row i -> 2i+1, a gap found at row i -> 2i
        kept = np.arange(table.num_rows) if keep is None else np.flatnonzero(keep)
        order = np.concatenate([2 * kept + 1, 2 * np.array([e[0] for e in extra])])
        both = pa.concat_tables([table, gaps])
        return both.take(pa.array(np.argsort(order, kind="stable")))


def warm_up() -> None:
    """Decode a small synthetic batch once, before capture starts: the first decode pays for lazy
    initialisation in numpy and pyarrow (0.1-0.8 s), long enough to overflow the ring buffer under
    load if it happened while recording."""
    recs = np.zeros(6, dtype=HEADER_DTYPE)
    recs["kind"] = [K_OPEN, K_DATA, K_DATA, K_GAP, K_DATA, K_CLOSE]
    recs["len"] = [0, 4, 4, 4, 4, 0]
    recs["offset"] = [16, 0, 8, 4, 12, 16]  # an offset jump, a late kernel gap, a close
    recs["comm"] = b"warm-up"
    recs["stack"] = 1
    raws = [r.tobytes() + (b"data" if r["kind"] == K_DATA else b"") for r in recs]
    RecordDecoder("warm-up", 0, {}).decode(raws)
