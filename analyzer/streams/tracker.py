"""Follow every connection through the segments: order its streams, detect its protocol, feed the
HTTP parser, and hand out its exchanges when it closes (or when the input ends).

State is kept only for connections still open, so memory is bounded by what is open, not by the
size of the input. In live mode (analyzer/live/follow.py) the input never ends: `drain` hands out the
exchanges that finished on connections gone idle, and `expire` ends connections silent for long
(their process died without SSL_free: no close row will come).

Every byte was written by someone else's program, so one connection can cost only so much (Limits):
rows the recorder never writes (nulls, unknown kinds, wrong types) are dropped and counted
(`rows_dropped`); bytes before the protocol is known are held up to a budget, then the protocol is
decided on what came; and a parser that raises anyway ends parsing of its connection only: its
exchanges so far are handed out, marked (ConnectionInfo.parse_error), and counted (`parse_errors`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace

import pyarrow as pa

from analyzer.http.http1 import REQUEST_LINE, STATUS_LINE, Http1Connection, looks_like_http1
from analyzer.http.http2 import CLIENT_PREFACE, Http2Connection, frames_chain
from analyzer.model import END_OF_INPUT, ConnectionInfo, Exchange, Limits
from analyzer.segments.columns import to_pylist
from analyzer.streams.reassembly import Data, Gap, StreamAssembler
from contract import identity
from contract.identity import ProcessIdentity

# Rows taken as Python values at a time: a batch is as large as its writer made its row group, and its
# columns as Python objects took several times its size (the exchanges it closed were held to its end too)
SLICE_ROWS = 4096
DETECT_BYTES = 64  # bytes of either direction that settle the protocol
MAX_RESUMABLE = 10_000  # expired connections remembered, in case their process speaks again
MAX_PLAIN_ENDS = 100_000  # plaintext connection ends remembered for pairing client and server
_DIRECTION = {"egress": "request", "ingress": "response"}
_KINDS = {"process", "open", "sni", "socket", "close", "data", "gap"}
# the columns every row kind reads; the others (identity columns) only the kinds below, and rows of
# an unknown kind, which are dropped whole
_ROW_COLUMNS = {"kind", "ts_wall", "node", "pid", "tid", "uid", "comm", "cgroup_id", "conn_id", "direction",
                "stream_offset", "length", "data", "gap_reason", "lib_path", "tls_stack",
                "_pos"}  # _pos: a parallel run's row positions (analyzer/parallel/order.py)
_IDENTITY_KINDS = {"process", "sni", "socket"}
# the columns a data row of an open connection is taken from (ConnectionTracker.feed)
_DATA_ROW = ("kind", "node", "conn_id", "ts_wall", "direction", "stream_offset", "data")
# the columns a connection's state is made from, at its first row (ConnectionTracker._open)
_OPEN_ROW = ("pid", "tid", "comm", "uid", "cgroup_id", "lib_path", "tls_stack")


@dataclass
class _Conn:
    info: ConnectionInfo
    streams: dict[str, StreamAssembler]
    parser: Http1Connection | Http2Connection | None = None
    early: list[tuple[str, Data | Gap]] = field(default_factory=list)  # pieces before detection
    early_bytes: int = 0  # data bytes in `early` (Limits.max_undetected_bytes)
    salvaged: list[Exchange] = field(default_factory=list)  # exchanges of a parser that raised
    head: dict[str, bytes] = field(default_factory=lambda: {"egress": b"", "ingress": b""})
    undetected: bool = True
    # which stream carries requests: egress when the process is the client (the usual case),
    # ingress when it is the server (an in-cluster model server using OpenSSL)
    sides: dict[str, str] = field(default_factory=lambda: dict(_DIRECTION))
    first_source: str | None = None  # the tracker's `source` when the connection's first row came
    sequence_base: int = 0  # exchanges numbered before (a connection resumed after it expired)


class ConnectionTracker:
    def __init__(self, max_body: int | None = None, on_close=None, limits: Limits | None = None):
        self.limits = limits or Limits()
        if max_body is not None:
            self.limits = replace(self.limits, max_body_bytes=max_body)
        self.max_body = self.limits.max_body_bytes
        self.rows_dropped = 0  # rows no recorder writes (nulls, unknown kinds, wrong types)
        self.parse_errors = 0  # connections whose parser raised (ConnectionInfo.parse_error)
        self.on_close = on_close  # called with each ConnectionInfo when its connection is done
        self.open: dict[tuple[str, str], _Conn] = {}
        self.connections_seen = 0
        # (node, pid) -> identity from the latest process row: the recorder writes a pid's process
        # row before that pid's other rows in each segment
        self.processes: dict[tuple[str, int], ProcessIdentity] = {}
        self.source: str | None = None  # what is being read (live mode: the segment), for first_source
        # connection -> exchanges numbered when it expired: if it speaks again, numbering goes on
        # (event ids hash the number, so a restart from 1 would reuse ids)
        self.resumable: OrderedDict[tuple[str, str], int] = OrderedDict()
        # plaintext connections by (node, local ip, local port, peer ip, peer port): the other end's
        # lookup (_pair)
        self.plain_ends: OrderedDict[tuple, ConnectionInfo] = OrderedDict()

    def process(self, batches: Iterable[pa.RecordBatch]) -> Iterator[Exchange]:
        """Consume batches of segment rows; yield exchanges as their connections close."""
        for batch in batches:
            for start in range(0, batch.num_rows, SLICE_ROWS):
                yield from self._feed_rows(batch.slice(start, SLICE_ROWS))
            del batch  # its rows were taken (as Python values): the next batch is read without it
        yield from self.finish()

    def feed(self, batch: pa.RecordBatch) -> list[Exchange]:
        """Consume one batch; the exchanges of the connections it closed."""
        out: list[Exchange] = []
        for start in range(0, batch.num_rows, SLICE_ROWS):
            out.extend(self._feed_rows(batch.slice(start, SLICE_ROWS)))
        return out

    def _feed_rows(self, batch: pa.RecordBatch) -> list[Exchange]:
        """feed() for a slice of a batch."""
        out: list[Exchange] = []
        core, columns, extra = _columns(batch)
        # Most rows are data rows of a connection already open, and the open and close rows of plain
        # connections: they are taken from the columns as they are (checked as _piece checks them); every
        # other row goes through _row as a dict. A parallel run's rows (_pos) always do.
        at = {n: k for k, n in enumerate(core)}
        fast = all(n in at for n in _DATA_ROW)
        ends = fast and "_pos" not in at
        opens = ends and all(n in at for n in _OPEN_ROW)
        if fast:
            kinds, nodes, conns, times, dirs, offsets, datas = (columns[at[n]] for n in _DATA_ROW)
        if opens:
            identities = [columns[at[n]] for n in _OPEN_ROW]
        open_ = self.open
        for i in range(batch.num_rows):
            if fast:
                kind = kinds[i]
                if kind == "data":
                    c = open_.get((nodes[i], conns[i]))
                    piece = c and _data_piece(times[i], dirs[i], offsets[i], datas[i])
                    if piece:
                        self._data_row(c, dirs[i], piece)
                        continue
                elif kind == "close" and ends:
                    key = (nodes[i], conns[i])
                    c = open_.get(key)
                    ts = times[i]
                    if c is not None and type(ts) is int:
                        c.info.last_ts_ns = max(c.info.last_ts_ns, ts)
                        c.info.closed = True
                        out.extend(self._close(key, closed=True))
                        continue
                elif kind == "open" and opens:
                    ts, conn = times[i], conns[i]
                    if type(ts) is int and (conn is None or type(conn) is str):
                        key = (nodes[i], conn)
                        c = open_.get(key) or self._open(key, ts, *(column[i] for column in identities))
                        c.info.last_ts_ns = max(c.info.last_ts_ns, ts)
                        c.info.seen_from_start = True
                        continue
            r = {name: column[i] for name, column in zip(core, columns, strict=True)}
            if i in extra:
                r.update(extra[i])
            done = self._row(r)
            if done:
                out.extend(done)
        return out

    def _data_row(self, c: _Conn, direction: str, piece: Data) -> None:
        c.info.last_ts_ns = max(c.info.last_ts_ns, piece.ts_ns)
        for p in c.streams[direction].push(piece):
            self._deliver(c, direction, p)

    def drain(self, idle_before_ns: int) -> list[Exchange]:
        """The finished exchanges of open connections with no row since idle_before_ns (wall clock,
        ns); the connections stay open. Taking them early changes nothing in them."""
        out: list[Exchange] = []
        for c in self.open.values():
            if c.info.last_ts_ns < idle_before_ns:
                out.extend(c.salvaged)
                c.salvaged = []
                if c.parser is not None:
                    out.extend(self._call(c, c.parser.take_finished) or ())
        return out

    def expire(self, before_ns: int) -> list[Exchange]:
        """End the connections with no row since before_ns as the end of input would (not closed)."""
        out: list[Exchange] = []
        for key in [k for k, c in self.open.items() if c.info.last_ts_ns < before_ns]:
            parser = self.open[key].parser
            out.extend(self._close(key, closed=False))
            self.resumable[key] = parser.sequence if parser is not None else self.resumable.get(key, 0)
            self.resumable.move_to_end(key)
            if len(self.resumable) > MAX_RESUMABLE:
                self.resumable.popitem(last=False)
        return out

    def finish(self) -> list[Exchange]:
        out: list[Exchange] = []
        for key in list(self.open):
            out.extend(self._close(key, closed=False))
        return out

    def _pair(self, info: ConnectionInfo) -> None:
        """Plaintext: link the two ends of one TCP connection when both were captured (a client and
        a server pod on one node), by their addresses: each end's local is the other's peer."""
        if info.local_port is None or info.peer_port is None:
            return
        here = (info.node, info.local_ip, info.local_port, info.peer_ip, info.peer_port)
        there = (info.node, info.peer_ip, info.peer_port, info.local_ip, info.local_port)
        other = self.plain_ends.get(there)
        if other is not None and other is not info:
            info.counterpart, other.counterpart = other, info
        self.plain_ends[here] = info
        self.plain_ends.move_to_end(here)
        if len(self.plain_ends) > MAX_PLAIN_ENDS:
            self.plain_ends.popitem(last=False)

    # ---- rows --------------------------------------------------------------------------------
    def _row(self, r: dict) -> list[Exchange] | None:
        piece = _piece(r)
        if piece is False:
            self.rows_dropped += 1
            return None
        if r["kind"] == "process":
            self.processes[(r.get("node"), r.get("pid"))] = identity.from_row(r)
            return None
        key = (r["node"], r["conn_id"])
        c = self.open.get(key)
        ts = r["ts_wall"]
        if c is None:
            c = self._open(key, ts, *(r.get(n) for n in _OPEN_ROW))
            if "_pos" in r:  # a parallel run (analyzer/parallel/order.py): ended by the input, unless closed
                c.info.order = END_OF_INPUT + r["_pos"]
        c.info.last_ts_ns = max(c.info.last_ts_ns, ts)
        kind = r["kind"]
        if kind == "open":
            c.info.seen_from_start = True
            return None
        if kind == "sni":
            c.info.server_name = r.get("server_name")
            return None
        if kind == "socket":
            _socket(c.info, r)
            if c.info.tls_stack == "plaintext":
                self._pair(c.info)
            return None
        if kind == "close":
            c.info.closed = True
            if "_pos" in r:  # a parallel run: its outputs come where this row is in the one-process order
                c.info.order = r["_pos"]
            return self._close(key, closed=True)
        direction = r["direction"]
        for p in c.streams[direction].push(piece):
            self._deliver(c, direction, p)
        return None

    def _open(self, key: tuple[str, str], ts: int, pid, tid, comm, uid, cgroup_id, lib_path,
              tls_stack) -> _Conn:
        """A connection's first row: its state (the identity columns of that row, _OPEN_ROW)."""
        info = ConnectionInfo(key[0], key[1], pid, tid, comm, uid, cgroup_id, lib_path, first_ts_ns=ts,
                              process=self.processes.get((key[0], pid)), tls_stack=tls_stack)
        streams = {d: StreamAssembler(max_pending=self.limits.max_reorder_bytes) for d in _DIRECTION}
        c = self.open[key] = _Conn(info, streams, first_source=self.source,
                                   sequence_base=self.resumable.get(key, 0))
        self.connections_seen += 1
        return c

    def _close(self, key, closed: bool) -> list[Exchange]:
        c = self.open.pop(key)
        for direction, stream in c.streams.items():
            for p in stream.finish():
                self._deliver(c, direction, p)
        if c.undetected:
            self._detect(c, final=True)
        out, c.salvaged = c.salvaged, []
        if c.parser is not None:
            finish = c.parser.finish
            args = (closed,) if isinstance(c.parser, Http1Connection) else ()
            out.extend(self._call(c, finish, *args) or ())
            out.extend(c.salvaged)  # finish itself raised
        if self.on_close:
            self.on_close(c.info)
        return out

    # ---- protocol ----------------------------------------------------------------------------
    def _deliver(self, c: _Conn, direction: str, piece: Data | Gap) -> None:
        info = c.info
        if isinstance(piece, Gap):
            info.missing_bytes += piece.length
        elif direction == "egress":
            info.egress_bytes += len(piece.data)
        else:
            info.ingress_bytes += len(piece.data)
        if c.undetected:
            c.early.append((direction, piece))
            # a gap is held as a record: it costs the budget as many bytes as a detection head
            c.early_bytes += len(piece.data) if isinstance(piece, Data) else DETECT_BYTES
            if isinstance(piece, Data) and len(c.head[direction]) < DETECT_BYTES:
                c.head[direction] += piece.data[:DETECT_BYTES]
            over = c.early_bytes > self.limits.max_undetected_bytes
            if over:
                # one direction keeps talking, the other is silent: decide on what came
                info.hit("max_undetected_bytes")
            self._detect(c, final=over)
            return
        self._feed(c, direction, piece)

    def _feed(self, c: _Conn, direction: str, piece: Data | Gap) -> None:
        parser = c.parser
        if parser is None:
            return
        side = c.sides[direction]
        if isinstance(piece, Gap):
            self._call(c, parser.gap, side, piece.length, piece.reason)
            return
        # bytes, nearly every piece: _call's boundary without its call
        try:
            if side == "request":
                parser.feed_request(piece.data, piece.ts_ns)
            else:
                parser.feed_response(piece.data, piece.ts_ns)
        except Exception as exc:  # noqa: BLE001 - one connection's bytes must not end the run
            self._fail(c, exc)

    def _call(self, c: _Conn, step, *args):
        """A parser step; if it raises, parsing of this connection ends there (the run goes on)."""
        try:
            return step(*args)
        except Exception as exc:  # noqa: BLE001 - one connection's bytes must not end the run
            self._fail(c, exc)
            return None

    def _fail(self, c: _Conn, exc: Exception) -> None:
        """The parser raised: hand out what it holds, marked, and ignore the connection's bytes."""
        exc.__traceback__ = None  # its frames (this batch's among them) go now, even if it is in a cycle
        self.parse_errors += 1
        c.info.parse_error = type(exc).__name__
        parser, c.parser = c.parser, None
        try:
            held = parser.salvage()
        except Exception:  # noqa: BLE001 - even its state is broken: what was finished is all
            held = list(getattr(parser, "finished", ()))
        note = f"parse error ({type(exc).__name__}): parsing of this connection stopped"
        for x in held:
            x.notes.append(note)
        c.salvaged.extend(held)

    def _detect(self, c: _Conn, final: bool) -> None:
        eg, ing = c.head["egress"], c.head["ingress"]
        # Both directions must have spoken: chunks may arrive in any order across directions, and
        # the answer must not depend on which came first.
        if not final and (len(eg) < DETECT_BYTES or len(ing) < DETECT_BYTES):
            return
        c.parser = self._choose(c.info, eg, ing, c.sequence_base)
        if c.parser is None and (looks_like_http1(ing, eg) or bool(ing) and ing == CLIENT_PREFACE[:len(ing)]):
            # the process answers requests: it is the server end of the connection
            c.info.role = "server"
            c.sides = {"egress": "response", "ingress": "request"}
            c.parser = self._choose(c.info, ing, eg, c.sequence_base)
        c.undetected = False
        early, c.early = c.early, []
        for direction, piece in early:
            self._feed(c, direction, piece)

    def _choose(self, info: ConnectionInfo, eg: bytes, ing: bytes, base: int):
        """The parser for a connection from its first bytes (None: not HTTP)."""
        n = min(len(eg), len(CLIENT_PREFACE))
        if n and eg[:n] == CLIENT_PREFACE[:n]:
            info.protocol = "h2"
            return Http2Connection(info, start_seen=True, sequence_base=base, limits=self.limits)
        if looks_like_http1(eg, ing):
            info.protocol = "http/1.1"
            # mid-connection, the other direction may start inside a message: resynchronize
            return Http1Connection(info, resync=not info.seen_from_start, sequence_base=base,
                                   limits=self.limits)
        if info.seen_from_start:
            return None  # seen from its first byte and not HTTP: some other protocol over TLS
        # capture began mid-connection: frame-shaped bytes, or a message start further in
        if frames_chain(eg) or frames_chain(ing):
            info.protocol = "h2"
            return Http2Connection(info, start_seen=False, sequence_base=base, limits=self.limits)
        if REQUEST_LINE.search(eg) or STATUS_LINE.search(ing):
            info.protocol = "http/1.1"
            return Http1Connection(info, resync=True, sequence_base=base, limits=self.limits)
        return None


def _columns(batch: pa.RecordBatch) -> tuple[list[str], list[list], dict[int, dict]]:
    """The batch's core columns (names, Python lists), and the identity columns of the rows whose kind
    reads them, by row (a third of the schema, null on nearly every row: converting every column of
    every row to Python objects was the largest single cost of a run)."""
    names = batch.schema.names
    core = [n for n in names if n in _ROW_COLUMNS]
    other = [n for n in names if n not in _ROW_COLUMNS]
    columns = [to_pylist(batch.column(n)) for n in core]
    extra: dict[int, dict] = {}
    if other:
        kinds = columns[core.index("kind")] if "kind" in core else [None] * batch.num_rows
        wanted = [i for i, k in enumerate(kinds) if not isinstance(k, str) or k in _IDENTITY_KINDS]
        if wanted:
            taken = batch.select(other).take(pa.array(wanted, pa.int64())).to_pydict()
            extra = {i: dict(zip(other, values, strict=True))
                     for i, values in zip(wanted, zip(*taken.values(), strict=True), strict=True)}
    return core, columns, extra


def _piece(r: dict) -> Data | Gap | None | bool:
    """The stream piece of a data or gap row, None for the other kinds, False for a row no recorder
    writes (to be dropped): an unknown kind, no time, a direction, offset, length or data that is
    null or of the wrong type. (A null conn_id is one key like any other.)"""
    kind = r.get("kind")
    if kind not in _KINDS:
        return False
    if kind == "process":
        return None
    if not isinstance(r.get("ts_wall"), int) or not isinstance(r.get("conn_id"), (str, type(None))):
        return False
    if kind == "data":
        return _data_piece(r["ts_wall"], r.get("direction"), r.get("stream_offset"), r.get("data")) or False
    if kind != "gap":
        return None
    offset = r.get("stream_offset")
    if not _placed(r.get("direction"), offset):
        return False
    length = r.get("length")
    if not isinstance(length, int) or length <= 0:
        return False
    reason = r.get("gap_reason")
    return Gap(offset, length, reason if isinstance(reason, str) and reason else "missing", r["ts_wall"])


def _placed(direction: object, offset: object) -> bool:
    """A stream row's direction and offset are what the recorder writes."""
    return direction in _DIRECTION and isinstance(offset, int) and offset >= 0


def _data_piece(ts: object, direction: object, offset: object, data: object) -> Data | None:
    """A data row's piece, or None when a value is not what the recorder writes (the row is dropped)."""
    if isinstance(ts, int) and _placed(direction, offset) and isinstance(data, bytes):
        return Data(offset, data, ts)
    return None


def _socket(info: ConnectionInfo, r: dict) -> None:
    """A socket row: an exact one (SSL_set_fd) wins over one inferred from the thread's connect()."""
    if info.socket_source == "set_fd" and r.get("socket_source") != "set_fd":
        return
    info.fd, info.socket_source = r.get("fd"), r.get("socket_source")
    info.peer_ip, info.peer_port = r.get("peer_ip"), r.get("peer_port")
    info.local_ip, info.local_port = r.get("local_ip"), r.get("local_port")
