"""HTTP/1.x exchanges from the two byte streams of a connection, with h11 (sans-IO).

h11 parses one side of a conversation it takes part in; we only listen. So two h11 connections run
in lockstep: one in the server role reads the client's bytes (requests), one in the client role
reads the server's bytes (responses). Each request is mirrored into the client-role parser as a
bodiless request with the same method (so that HEAD, 1xx and keep-alive are judged as h11 judges
them), and each finished response is mirrored back into the server-role parser, so that it moves on
to the next (pipelined) request. h11 keeps pipelined requests buffered until then.

A gap inside a body whose Content-Length says it cannot reach past the body's end keeps the
framing: the body reader is told the bytes went by (nothing is allocated for them: a gap may be
gigabytes), the message is marked incomplete, and the exchange keeps its other half (an 80 KB
prompt over the capture limit still has its answer). Any other gap breaks HTTP/1 framing: the
exchanges in flight are closed as incomplete, both parsers restart, and each direction resumes at
the next line that starts a request or a status line.

Bounded against hostile input: the bodies of the exchanges in flight share
Limits.max_connection_body_bytes, and bytes waiting for their parser (requests pipelined while the
server is silent, responses whose request was lost) at most Limits.max_pipelined_requests captured
writes per direction: over it, the exchanges in flight are handed out as they stand and both parsers
restart as after a gap, the waiting bytes kept (the oldest waiting responses beyond the budget dropped).

The common case skips h11 (http1_simple.py): with both parsers idle and nothing waiting, a request whole
in one write is parsed directly and its exchange begun as h11's events would begin it; its response,
if whole in one write too, ends it, and h11 never saw either. Anything else first puts the parsers
where h11 would be (`_materialize`: the request's bytes read by the server role, the mirror sent to the
client role) and goes on through h11.
"""

from __future__ import annotations

import re
from collections import deque

import h11

from analyzer.bounded_dict import BoundedDict
from analyzer.http.http1_simple import SimpleMessage, simple_request, simple_response
from analyzer.http.redaction import is_secret_name
from analyzer.model import ConnectionInfo, Exchange, Limits, StreamGap, SyncState

MAX_HEADER_BYTES = 256 * 1024

REQUEST_LINE = re.compile(
    rb"(?:^|\r?\n)((?:GET|POST|PUT|DELETE|PATCH|HEAD|OPTIONS|CONNECT|TRACE) \S+ HTTP/1\.[01]\r?\n)"
)
STATUS_LINE = re.compile(rb"(?:^|\r?\n)(HTTP/1\.[01] [1-5]\d\d[ \r])")


# (name, value) pairs repeat from message to message (host, content-type, user-agent, accept): short ones
# are kept decoded, up to 16,384 of them (then forgotten all at once: a bound, not a policy); never a
# pair whose name says it carries a credential: an API key is not kept beyond its message
_KNOWN_PAIR_BYTES = 256
_known: BoundedDict = BoundedDict(1 << 14)


def _header(k: bytes, v: bytes) -> tuple[str, str]:
    return k.decode("latin-1").lower(), v.decode("latin-1")


def _headers(raw) -> list[tuple[str, str]]:
    """h11's (or http1_simple's) header pairs as text: names lower-cased, in order."""
    out = []
    for pair in raw:
        done = _known.get(pair)
        if done is None:
            k, v = pair
            done = _header(k, v)
            if len(k) + len(v) <= _KNOWN_PAIR_BYTES and not is_secret_name(done[0]):
                _known.keep(pair, done)
        out.append(done)
    return out


_NO_TRAILERS = h11.EndOfMessage()


def looks_like_http1(egress: bytes, ingress: bytes) -> bool:
    """The first bytes of a stream start a request line, or of the other a status line."""
    return bool(REQUEST_LINE.match(egress[:2048]) or STATUS_LINE.match(ingress[:64]))


class Http1Connection:
    """Feed each direction's bytes (with their capture time) and gaps; take finished exchanges."""

    def __init__(self, conn: ConnectionInfo, max_body: int | None = None, resync: bool = False,
                 sequence_base: int = 0, limits: Limits | None = None):
        self.conn = conn
        self.limits = Limits.of(limits, max_body)
        self.max_body = self.limits.max_body_bytes
        self.finished: list[Exchange] = []
        self._seq = sequence_base  # exchanges are numbered from sequence_base + 1
        self._inflight: deque[Exchange] = deque()  # request seen, exchange not finished
        self._backlog: list[tuple[bytes, int]] = []  # response bytes waiting for their request
        self._ended: dict[str, set[int]] = {"request": set(), "response": set()}  # ids of messages done
        self.held_body_bytes = 0  # body bytes of the exchanges in flight (Limits.max_connection_body_bytes)
        # resync: the capture began mid-connection, so skip to the first message start
        self._new_parsers(SyncState.JOINED_MID_STREAM if resync else SyncState.IN_SYNC)
        # how the next request begins, said on its exchange: after the capture joined, after a gap
        self._next_begins = self._sync["request"]
        self._resumed_after: StreamGap | None = None

    # ---- input -------------------------------------------------------------------------------
    def feed_request(self, data: bytes, ts_ns: int) -> None:
        if self._dead:
            return
        if self._fast is not None:
            self._materialize()
        elif self._idle() and (msg := simple_request(data)) is not None:
            self._fast_request(msg, data[:len(data) - len(msg.body)], ts_ns)
            return
        self._req_backlog.append((data, ts_ns))
        self._pump()
        if len(self._req_backlog) > self.limits.max_pipelined_requests:
            self._overflow("request")

    def feed_response(self, data: bytes, ts_ns: int) -> None:
        if self._dead:
            return
        if self._fast is not None:
            x = self._fast[0]
            if not self._backlog and (msg := simple_response(data, x.method)) is not None:
                self._fast_response(x, msg, ts_ns)
                return
            self._materialize()
        self._backlog.append((data, ts_ns))
        self._pump()
        if len(self._backlog) > self.limits.max_pipelined_requests:
            self._overflow("response")

    def gap(self, direction: str, length: int, reason: str) -> None:
        """Bytes are missing in one direction: bridge them inside a sized body, else close what is in
        flight and resynchronize."""
        if self._dead:
            return  # parsing stopped: nothing is in flight, nothing will be
        if self._fast is not None:
            self._materialize()
        gap = StreamGap(direction, length, reason)
        if self._bridge(gap):
            return
        for x in self._inflight:
            x.add_gap(gap, self.limits.max_gap_records)
            msg = getattr(x, direction)
            msg.complete = False
            msg.missing_bytes += length
        self._flush_inflight()
        self._next_begins = SyncState.AFTER_GAP
        self._resumed_after = StreamGap(direction, length, reason, resumed=True)
        self._new_parsers(SyncState.AFTER_GAP)

    def finish(self, closed: bool) -> list[Exchange]:
        """End of input. `closed`: the capture saw the connection end (so EOF delimits bodies)."""
        if self._fast is not None:
            self._materialize()
        # parsers not made have read nothing: the end of input ends nothing in them
        if closed and not self._dead and not self._backlog and self._parsers is not None:
            try:
                self._resp.receive_data(b"")  # end of file: delimits a body read until close
                self._pump()
            except h11.ProtocolError:
                pass
        for x in self._inflight:
            if not x.response.complete:
                x.notes.append("response not complete when the capture ended")
            if not x.request.complete:
                x.notes.append("request not complete when the capture ended")
        self._flush_inflight()
        return self.finished

    def salvage(self) -> list[Exchange]:
        """Every exchange held, as it stands (after a parser error: no more parsing)."""
        out = self.finished + list(self._inflight)
        self.finished, self._inflight, self.held_body_bytes = [], deque(), 0
        return out

    def take_finished(self) -> list[Exchange]:
        """The exchanges finished so far (final: nothing touches them again); the connection goes on."""
        out, self.finished = self.finished, []
        return out

    @property
    def sequence(self) -> int:
        """The number of the last exchange begun."""
        return self._seq

    # ---- internals ---------------------------------------------------------------------------
    @property
    def _dead(self) -> bool:
        return self._sync["request"] is SyncState.DEAD

    def _bridge(self, gap: StreamGap) -> bool:
        """Queue the gap for the parser of its side if it surely falls inside the body being read
        (Content-Length known, not chunked, enough of it left): when the parser reaches it, its
        body reader skips the lost bytes (_skip)."""
        side, length = gap.direction, gap.length
        x = self._cur_req if side == "request" else self._cur_resp
        if x is None or id(x) in self._ended[side] or self._dead:
            return False
        msg = getattr(x, side)
        if side == "response" and x.status is None:
            return False  # the response's headers have not been parsed yet
        length_header = msg.header("content-length")
        if not length_header or not length_header.isdigit() or msg.header("transfer-encoding"):
            return False
        backlog = self._req_backlog if side == "request" else self._backlog
        start = self._body_off[side] + sum(d if isinstance(d, int) else len(d) for d, _ in backlog)
        if start + length > int(length_header):
            return False
        msg.missing_bytes += length
        x.add_gap(gap, self.limits.max_gap_records)
        # the gap waits in the backlog as its length, behind the bytes before it
        backlog.append((length, backlog[-1][1] if backlog else msg.end_ns or msg.start_ns or 0))
        self._pump()
        return True

    def _skip(self, parser: h11.Connection, side: str, length: int) -> None:
        """A bridged gap reached its parser (waiting for body bytes, its buffer empty): the
        Content-Length reader is told `length` bytes went by. h11 has no API for this; if its reader
        is not the one expected, parsing of the connection stops rather than guess."""
        reader = getattr(parser, "_reader", None)
        remaining = getattr(reader, "_remaining", None)
        if type(reader).__name__ != "ContentLengthReader" or not isinstance(remaining, int) \
                or remaining < length:
            raise h11.LocalProtocolError("a bridged gap did not fall inside the body being read")
        reader._remaining -= length
        self._body_off[side] += length

    def _new_parsers(self, sync: SyncState) -> None:
        # the server-role and client-role h11 connections (_req, _resp), made when first asked for: an
        # exchange whose messages both go the fast way never needs them (making them was 2.6 us)
        self._parsers: tuple[h11.Connection, h11.Connection] | None = None
        self._cur_req: Exchange | None = None  # whose request the server-role parser is reading
        self._cur_resp: Exchange | None = None  # whose response the client-role parser is reading
        self._sync = {"request": sync, "response": sync}  # seeking: skip to the next message start
        self._req_ts = 0
        self._resp_ts = 0
        # Bytes wait here until their parser asks for more, so that every event is timed by the
        # chunk it came from, whatever order the two directions arrived in.
        self._req_backlog: list[tuple[bytes, int]] = []
        self._backlog = []
        # body bytes gone by so far (parsed or lost in a bridged gap) of the message being read, per side
        self._body_off = {"request": 0, "response": 0}
        # the exchange whose request went the fast way (neither parser saw it): its head's bytes and its
        # body's length (the body itself is the exchange's: not held twice), method and target
        self._fast: tuple[Exchange, bytes, int, bytes, bytes] | None = None

    @property
    def _req(self) -> h11.Connection:
        """The server-role parser: it reads the requests."""
        if self._parsers is None:
            self._make_parsers()
        return self._parsers[0]

    @property
    def _resp(self) -> h11.Connection:
        """The client-role parser: it reads the responses."""
        if self._parsers is None:
            self._make_parsers()
        return self._parsers[1]

    def _make_parsers(self) -> None:
        self._parsers = (h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER_BYTES),
                         h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEADER_BYTES))

    def _idle(self) -> bool:
        """Both parsers between messages, in sync, nothing waiting or buffered: h11 would read the next
        request from its first byte, and the response to it likewise (parsers not made yet are so)."""
        if (self._cur_req is not None or self._cur_resp is not None or self._inflight or self._req_backlog
                or self._backlog or self._sync["request"] is not SyncState.IN_SYNC
                or self._sync["response"] is not SyncState.IN_SYNC):
            return False
        if self._parsers is None:
            return True
        req, resp = self._parsers
        return (req.their_state is h11.IDLE and req.our_state is h11.IDLE
                and resp.their_state is h11.IDLE and resp.our_state is h11.IDLE
                and not req.trailing_data[0] and not resp.trailing_data[0])

    def _fast_request(self, msg: SimpleMessage, head: bytes, ts: int) -> None:
        """A whole request, as the Request, Data and EndOfMessage events of _pump_requests would take
        it; the client-role parser is told of it only if its response needs h11 (_materialize)."""
        self._seq += 1
        x = Exchange(self.conn, "1.1", self._seq)
        x.method = msg.method.decode("latin-1")
        x.path = msg.target.decode("latin-1")
        x.request.headers = _headers(msg.headers)
        x.authority = x.request.header("host")
        x.request.start_ns = ts
        self._req_ts = ts
        self._body_off["request"] = 0
        self._begin(x)
        self._inflight.append(x)
        self._cur_req = self._cur_resp = x
        self._fast = (x, head, len(msg.body), msg.method, msg.target)
        if msg.body:
            self._add_body(x, "request", msg.body, ts)
        self._end_message(x, "request", _NO_TRAILERS, ts)

    def _fast_response(self, x: Exchange, msg: SimpleMessage, ts: int) -> None:
        """A whole response to the fast request, as the events of _pump_responses would take it."""
        self._resp_ts = ts
        x.status = msg.status
        x.response.headers = _headers(msg.headers)
        self._body_off["response"] = 0
        if x.response.start_ns is None:
            x.response.start_ns = ts
        if msg.body:
            self._add_body(x, "response", msg.body, ts)
        self._end_message(x, "response", _NO_TRAILERS, ts)
        self._maybe_next_cycle()

    def _materialize(self) -> None:
        """Bring the parsers to where h11 would be had the fast request gone through it: the
        server-role parser reads its bytes (to the pause after its end), the client-role parser is
        told it went out."""
        x, head, length, method, target = self._fast
        self._fast = None
        # then the body's bytes as h11 counts them (what they were went to the exchange already: stand-ins,
        # no larger than the write they came in); no empty chunk, which h11 takes for the end of input
        self._req.receive_data(head + bytes(length))
        for _ in range(4):  # Request, Data, EndOfMessage (what the fast path took already), the pause
            if self._req.next_event() in (h11.NEED_DATA, h11.PAUSED):
                break
        else:  # h11 read these bytes otherwise than the fast path: never guess on
            raise h11.LocalProtocolError("the fast path and h11 read a request differently")
        self._send_mirror(x, method, target, b"1.1")

    def _flush_inflight(self) -> None:
        while self._inflight:
            self._finished(self._inflight.popleft())

    def _overflow(self, side: str) -> None:
        """More than Limits.max_pipelined_requests writes wait in `side`'s backlog: the exchanges in
        flight are handed out as they stand, and both parsers restart seeking a message start, the
        waiting bytes (and what h11 buffered) kept; the oldest waiting responses beyond the budget,
        answers to no request the capture saw, are dropped."""
        self.conn.hit("max_pipelined_requests")
        for x in self._inflight:
            x.notes.append(f"handed out as it stands: more than {self.limits.max_pipelined_requests} "
                           f"captured writes waiting in the {side} stream")
        self._flush_inflight()
        waiting = {"request": (self._req, self._req_ts, self._req_backlog),
                   "response": (self._resp, self._resp_ts, self._backlog)}
        # bridged gaps (lengths) are dropped with the bodies they were bridging
        kept = {k: ([(p.trailing_data[0], ts)] if p.trailing_data[0] else [])
                + [(d, t) for d, t in backlog if not isinstance(d, int)]
                for k, (p, ts, backlog) in waiting.items()}
        del kept["response"][:-self.limits.max_pipelined_requests]
        self._new_parsers(SyncState.AFTER_GAP)
        self._req_backlog, self._backlog = kept["request"], kept["response"]
        self._pump()

    def _finished(self, x: Exchange) -> None:
        self.held_body_bytes -= len(x.request.body) + len(x.response.body)
        # forget its id: once taken (take_finished) the exchange may be freed and its id reused
        self._ended["request"].discard(id(x))
        self._ended["response"].discard(id(x))
        self.finished.append(x)

    def _stop(self, why: str) -> None:
        self._sync = {"request": SyncState.DEAD, "response": SyncState.DEAD}
        for x in self._inflight:
            x.notes.append(why)
        self._flush_inflight()

    def _pump(self) -> None:
        try:
            progress = True
            while progress and not self._dead:
                progress = self._pump_requests() | self._pump_responses()
        except h11.RemoteProtocolError as exc:
            # h11 raises its error from a method of the error itself: its traceback holds the error, a cycle
            # that kept every frame below (the tracker's, with the batch being read) until a collection
            exc.__traceback__ = None
            self._stop(f"HTTP/1 parse error: {exc}")
        except h11.LocalProtocolError as exc:  # our mirroring was refused: a state we did not expect
            exc.__traceback__ = None
            self._stop(f"HTTP/1 state error: {exc}")

    def _pump_requests(self) -> bool:
        progress = False
        while True:
            ev = self._req.next_event()
            if ev is h11.PAUSED:
                return progress
            if ev is h11.NEED_DATA:
                if not self._req_backlog:
                    return progress
                data, ts = self._req_backlog.pop(0)
                if isinstance(data, int):  # a bridged gap
                    self._req_ts = ts
                    self._skip(self._req, "request", data)
                    progress = True
                    continue
                if self._sync["request"].seeking:
                    m = REQUEST_LINE.search(data)
                    if not m:
                        continue
                    data = data[m.start(1):]
                    self._sync["request"] = SyncState.IN_SYNC
                self._req_ts = ts
                self._req.receive_data(data)
                progress = True
                continue
            if isinstance(ev, h11.ConnectionClosed):
                return progress  # h11 repeats it on every call: not progress
            progress = True
            if isinstance(ev, h11.Request):
                self._seq += 1
                x = Exchange(self.conn, ev.http_version.decode(), self._seq)
                x.method = ev.method.decode("latin-1")
                x.path = ev.target.decode("latin-1")
                x.request.headers = _headers(ev.headers)
                x.authority = x.request.header("host")
                x.request.start_ns = self._req_ts
                self._body_off["request"] = 0
                self._begin(x)
                self._inflight.append(x)
                self._cur_req = x
                self._mirror_request(x, ev)
            elif isinstance(ev, h11.Data):
                self._add_body(self._cur_req, "request", ev.data, self._req_ts)
            elif isinstance(ev, h11.EndOfMessage):
                self._end_message(self._cur_req, "request", ev, self._req_ts)
                self._maybe_next_cycle()

    def _begin(self, x: Exchange) -> None:
        """Say on the first exchange after the capture joined, or after a gap, how it began."""
        if self._next_begins is SyncState.JOINED_MID_STREAM:
            x.notes.append("capture began mid-connection")
        elif self._next_begins is SyncState.AFTER_GAP:
            x.add_gap(self._resumed_after, self.limits.max_gap_records)
        self._next_begins = SyncState.IN_SYNC

    def _mirror_request(self, x: Exchange, ev: h11.Request) -> None:
        """Tell the client-role parser a request went out, so it expects the response."""
        if self._cur_resp is not None:
            return  # still reading the previous response; this one is mirrored after it
        self._send_mirror(x, ev.method, ev.target, ev.http_version)

    def _send_mirror(self, x: Exchange, method: bytes, target: bytes, http_version: bytes) -> None:
        headers = [(b"host", (x.authority or "unknown").encode("latin-1")), (b"content-length", b"0")]
        if any(k == "connection" and "close" in v.lower() for k, v in x.request.headers):
            headers.append((b"connection", b"close"))
        self._resp.send(h11.Request(method=method, target=target, headers=headers, http_version=http_version))
        self._resp.send(h11.EndOfMessage())
        self._cur_resp = x

    def _pump_responses(self) -> bool:
        """Process response events, feeding backlog bytes only when the parser needs them; True
        when anything happened."""
        progress = False
        while self._cur_resp is not None:
            ev = self._resp.next_event()
            if ev is h11.PAUSED:
                return progress
            if ev is h11.NEED_DATA:
                if not self._backlog:
                    return progress
                data, ts = self._backlog.pop(0)
                if isinstance(data, int):  # a bridged gap
                    self._resp_ts = ts
                    self._skip(self._resp, "response", data)
                    progress = True
                    continue
                if self._sync["response"].seeking:
                    if ts < (self._cur_resp.request.start_ns or 0):
                        continue  # the answer to a request lost before the resync point
                    m = STATUS_LINE.search(data)
                    if not m:
                        continue
                    data = data[m.start(1):]
                    self._sync["response"] = SyncState.IN_SYNC
                self._resp_ts = ts
                self._resp.receive_data(data)
                progress = True
                continue
            if isinstance(ev, h11.ConnectionClosed):
                return progress  # h11 repeats it on every call: not progress
            progress = True
            x = self._cur_resp
            ts = self._resp_ts
            if isinstance(ev, h11.InformationalResponse):
                x.informational.append(ev.status_code)
                if x.response.start_ns is None:
                    x.response.start_ns = ts
                if ev.status_code == 101:
                    self._stop("protocol switched (101): no more HTTP/1 on this connection")
                    return True
            elif isinstance(ev, h11.Response):
                x.status = ev.status_code
                x.response.headers = _headers(ev.headers)
                self._body_off["response"] = 0
                if x.response.start_ns is None:
                    x.response.start_ns = ts
            elif isinstance(ev, h11.Data):
                self._add_body(x, "response", ev.data, ts)
            elif isinstance(ev, h11.EndOfMessage):
                self._end_message(x, "response", ev, ts)
                self._maybe_next_cycle()
                return True
        return progress

    def _add_body(self, x: Exchange, side: str, data: bytes, ts: int) -> None:
        """Append body bytes up to the size cap and the connection's budget (noting once when one
        is exceeded)."""
        self._body_off[side] += len(data)
        msg = getattr(x, side)
        room = self.max_body - len(msg.body)
        shared = self.limits.max_connection_body_bytes - self.held_body_bytes
        over_shared = shared < min(room, len(data))  # the connection's budget binds
        if over_shared:
            room = shared
            self.conn.hit("max_connection_body_bytes")
        if len(data) > room and not msg.capped:
            msg.capped = True
            x.notes.append(f"{side} body over the connection's body budget" if over_shared
                           else f"{side} body over the size cap")
        kept = data[:max(room, 0)]
        msg.add_body(kept, ts)
        self.held_body_bytes += len(kept)
        msg.end_ns = ts  # the last byte so far: kept if the end never comes

    def _end_message(self, x: Exchange, side: str, ev: h11.EndOfMessage, ts: int) -> None:
        msg = getattr(x, side)
        # the fast path's end: no trailers (iterating h11's empty header list took 2 us)
        msg.trailers = [] if ev is _NO_TRAILERS else _headers(ev.headers)
        msg.end_ns = ts
        self._ended[side].add(id(x))
        msg.complete = not msg.capped and not msg.missing_bytes

    def _maybe_next_cycle(self) -> None:
        """When the current exchange has both ends, move both parsers to the next one."""
        x = self._cur_resp
        if x is None or x is not self._cur_req or id(x) not in self._ended["request"] \
                or id(x) not in self._ended["response"]:
            return
        self._inflight.remove(x)
        self._finished(x)
        self._cur_resp = None
        if self._fast is not None:  # both messages went the fast way: h11 saw neither, both are idle
            self._fast = None
            self._cur_req = None
            return
        if self._resp.their_state is not h11.DONE or self._req.their_state is not h11.DONE:
            # the server closes after this response (Connection: close, HTTP/1.0): nothing follows
            if self._resp.their_state in (h11.MUST_CLOSE, h11.CLOSED):
                self._cur_req = None
                return
        # finish the server-role side with a stand-in response, then start the next cycle
        self._req.send(h11.Response(status_code=200, headers=[(b"content-length", b"0")]))
        self._req.send(h11.EndOfMessage())
        if self._req.our_state is h11.DONE and self._req.their_state is h11.DONE:
            self._req.start_next_cycle()
        if self._resp.our_state is h11.DONE and self._resp.their_state is h11.DONE:
            self._resp.start_next_cycle()
        self._cur_req = None

