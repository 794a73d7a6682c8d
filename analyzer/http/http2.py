"""HTTP/2 exchanges from the two byte streams of a connection: frames with hyperframe, header
blocks with hpack (both from the h2 project), sans-IO.

One HPACK decoder per direction of each connection (the peers' mistake was one per process or per
direction across connections). When the capture began mid-connection, the decoders' dynamic tables
are unknown: header blocks that fail to decode, and every block after in that direction, mark the
stream's headers unreliable, while DATA frames still flow into bodies.

Bounded against hostile input: a header block (HEADERS plus CONTINUATIONs) over MAX_HEADER_BLOCK is
dropped and flagged, the HPACK table size is capped, and a frame over MAX_FRAME_SIZE ends parsing of
that direction.
"""

from __future__ import annotations

import hpack
from hyperframe.exceptions import HyperframeError
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PushPromiseFrame,
    RstStreamFrame,
    SettingsFrame,
)

from analyzer.model import ConnectionInfo, Exchange, HttpMessage, StreamGap, SyncState

CLIENT_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
FRAME_HEADER = 9
MAX_FRAME_SIZE = (1 << 24) - 1  # the format's own limit
MAX_HEADER_BLOCK = 1 << 20
MAX_HPACK_TABLE = 1 << 16
MAX_HEADER_LIST = 1 << 20
DEFAULT_MAX_BODY = 64 * 1024 * 1024
KNOWN_TYPES = range(0, 10)
# frames that must carry a stream id, and those that must not
_STREAM_FRAMES = {0x0, 0x1, 0x2, 0x3, 0x5, 0x9}
_CONN_FRAMES = {0x4, 0x6, 0x7}

ERROR_CODES = {0: "NO_ERROR", 1: "PROTOCOL_ERROR", 2: "INTERNAL_ERROR", 3: "FLOW_CONTROL_ERROR",
               4: "SETTINGS_TIMEOUT", 5: "STREAM_CLOSED", 6: "FRAME_SIZE_ERROR", 7: "REFUSED_STREAM",
               8: "CANCEL", 9: "COMPRESSION_ERROR", 10: "CONNECT_ERROR", 11: "ENHANCE_YOUR_CALM",
               12: "INADEQUATE_SECURITY", 13: "HTTP_1_1_REQUIRED"}


def plausible_frame(buf: bytes, pos: int) -> int | None:
    """The end of a frame starting at pos if its header looks like HTTP/2, else None."""
    if len(buf) - pos < FRAME_HEADER:
        return None
    length = int.from_bytes(buf[pos:pos + 3], "big")
    ftype = buf[pos + 3]
    stream = int.from_bytes(buf[pos + 5:pos + 9], "big")
    if ftype not in KNOWN_TYPES or stream >> 31 or length > 1 << 20:
        return None
    if ftype in _STREAM_FRAMES and stream == 0 or ftype in _CONN_FRAMES and stream != 0:
        return None
    if ftype == 0x4 and length % 6 or ftype == 0x6 and length != 8 or ftype == 0x3 and length != 4:
        return None
    return pos + FRAME_HEADER + length


def frames_chain(buf: bytes, pos: int = 0, need: int = 2) -> bool:
    """From pos, `need` plausible frames in a row, or plausible frames ending exactly at the end. A
    last frame whose header is whole but whose body the buffer cuts off counts: detection looks at
    the first 64 bytes only, which a HEADERS frame of 46 bytes and the next header fill exactly."""
    count = 0
    while True:
        end = plausible_frame(buf, pos)
        if end is None:
            return False
        if end > len(buf):
            return count + 1 >= need
        count += 1
        if end == len(buf) or count >= need:
            return True
        pos = end


class _Direction:
    """Frame splitting and header decoding for one direction."""

    def __init__(self, name: str, reliable: bool, expect_preface: bool):
        self.name = name
        self.buf = b""
        self.ts = 0
        self.decoder = hpack.Decoder(max_header_list_size=MAX_HEADER_LIST)
        self.decoder.max_allowed_table_size = MAX_HPACK_TABLE
        self.reliable = reliable  # is the HPACK state known?
        self.expect_preface = expect_preface
        # do we know where frames begin? (seen from the start, or found again after joining or a gap)
        self.sync = SyncState.IN_SYNC if reliable else SyncState.JOINED_MID_STREAM
        self.block: tuple[HeadersFrame | PushPromiseFrame, list[bytes], int] | None = None
        self.block_size = 0


class Http2Connection:
    """Feed each direction's bytes and gaps; take the exchanges (one per stream) at the end."""

    def __init__(self, conn: ConnectionInfo, start_seen: bool, max_body: int = DEFAULT_MAX_BODY,
                 sequence_base: int = 0):
        self.conn = conn
        self.max_body = max_body
        self.streams: dict[int, Exchange] = {}
        self.sequence = sequence_base  # streams are numbered in order of appearance, from base + 1
        self._max_taken = -1  # highest stream id handed out by take_finished (none: one-shot as before)
        self.notes: list[str] = []  # connection-level: GOAWAY, hostile input
        self.dirs = {
            "request": _Direction("request", start_seen, expect_preface=start_seen),
            "response": _Direction("response", start_seen, expect_preface=False),
        }

    # ---- input -------------------------------------------------------------------------------
    def feed_request(self, data: bytes, ts_ns: int) -> None:
        self._feed(self.dirs["request"], data, ts_ns)

    def feed_response(self, data: bytes, ts_ns: int) -> None:
        self._feed(self.dirs["response"], data, ts_ns)

    def gap(self, direction: str, length: int, reason: str) -> None:
        d = self.dirs[direction]
        gap = StreamGap(direction, length, reason)
        # frames in flight in this direction lose bytes; HPACK state is unknown from here on
        for x in self.streams.values():
            msg = x.request if direction == "request" else x.response
            if not msg.complete:
                msg.missing_bytes += length
                x.gaps.append(gap)
                x.notes.append(gap.note)
        d.buf = b""
        d.block = None
        d.reliable = False
        if d.sync is not SyncState.DEAD:
            d.sync = SyncState.AFTER_GAP
        self.notes.append(gap.note)

    def finish(self) -> list[Exchange]:
        for d in self.dirs.values():
            if d.buf and d.sync is not SyncState.DEAD:
                self.notes.append(f"{len(d.buf)} bytes of an unfinished frame in the {d.name} stream")
        for x in self.streams.values():
            _finalize(x)
        return [self.streams[k] for k in sorted(self.streams)]

    def take_finished(self) -> list[Exchange]:
        """Streams whose request and response both ended, in stream order; the connection goes on.
        Later frames of a stream taken (a late RST_STREAM) are ignored: stream ids only grow, so
        an id at or below the highest taken that is not open is one of them."""
        done = sorted(k for k, x in self.streams.items() if x.request.complete and x.response.complete)
        out = []
        for k in done:
            x = self.streams.pop(k)
            _finalize(x)
            out.append(x)
            self._max_taken = max(self._max_taken, k)
        return out

    # ---- frames ------------------------------------------------------------------------------
    def _feed(self, d: _Direction, data: bytes, ts_ns: int) -> None:
        if d.sync is SyncState.DEAD:
            return
        d.buf += data
        d.ts = ts_ns
        if d.expect_preface:
            if len(d.buf) < len(CLIENT_PREFACE):
                if not CLIENT_PREFACE.startswith(d.buf):
                    d.expect_preface = False
                return
            if d.buf.startswith(CLIENT_PREFACE):
                d.buf = d.buf[len(CLIENT_PREFACE):]
            d.expect_preface = False
        if d.sync.seeking:
            # capture began mid-connection or after a gap: find where frames begin
            for pos in range(min(len(d.buf), 64 * 1024)):
                if frames_chain(d.buf, pos):
                    d.buf = d.buf[pos:]
                    d.sync = SyncState.IN_SYNC
                    break
            else:
                if len(d.buf) > 64 * 1024:
                    d.buf = d.buf[-FRAME_HEADER:]
                return
        view = memoryview(d.buf)
        pos = 0
        while len(d.buf) - pos >= FRAME_HEADER:
            length = int.from_bytes(d.buf[pos:pos + 3], "big")
            if length > MAX_FRAME_SIZE or length > (1 << 20) and d.buf[pos + 3] != 0x0:
                d.sync = SyncState.DEAD
                self.notes.append(f"oversized frame ({length} bytes) in the {d.name} stream: parsing stopped")
                return
            if len(d.buf) - pos < FRAME_HEADER + length:
                break
            try:
                frame, _ = Frame.parse_frame_header(view[pos:pos + FRAME_HEADER])
                frame.parse_body(view[pos + FRAME_HEADER:pos + FRAME_HEADER + length])
            except (HyperframeError, ValueError) as exc:
                self.notes.append(f"invalid frame in the {d.name} stream: {exc}")
                pos += FRAME_HEADER + length
                continue
            pos += FRAME_HEADER + length
            self._frame(d, frame, ts_ns)
        d.buf = d.buf[pos:]

    def _exchange(self, stream_id: int) -> Exchange:
        x = self.streams.get(stream_id)
        if x is None:
            if stream_id <= self._max_taken:
                return Exchange(self.conn, "2", 0, stream_id=stream_id)  # taken already: a throwaway
            self.sequence += 1
            x = Exchange(self.conn, "2", self.sequence, stream_id=stream_id)
            self.streams[stream_id] = x
        return x

    def _frame(self, d: _Direction, frame: Frame, ts: int) -> None:
        is_req = d.name == "request"
        if d.block is not None and not isinstance(frame, ContinuationFrame):
            self.notes.append(f"header block interrupted by a {type(frame).__name__} frame")
            d.block = None
        if isinstance(frame, (HeadersFrame, PushPromiseFrame)):
            d.block = (frame, [frame.data], ts)
            d.block_size = len(frame.data)
            if "END_HEADERS" in frame.flags:
                self._end_block(d)
        elif isinstance(frame, ContinuationFrame):
            if d.block is None:
                return
            d.block_size += len(frame.data)
            if d.block_size > MAX_HEADER_BLOCK:
                x = self._exchange(d.block[0].stream_id)
                x.notes.append(f"header block over {MAX_HEADER_BLOCK} bytes (CONTINUATION flood): dropped")
                d.block = None
                d.reliable = False  # the dropped block may have changed the HPACK table
                return
            d.block[1].append(frame.data)
            if "END_HEADERS" in frame.flags:
                self._end_block(d)
        elif isinstance(frame, DataFrame):
            x = self._exchange(frame.stream_id)
            msg = x.request if is_req else x.response
            if msg.start_ns is None:
                msg.start_ns = ts
                msg.headers_reliable = False  # body before any headers we saw
            room = self.max_body - len(msg.body)
            if len(frame.data) > room:
                msg.capped = True
                x.notes.append(f"{d.name} body over the size cap")
            msg.body += frame.data[:max(room, 0)]
            msg.end_ns = ts
            if "END_STREAM" in frame.flags:
                msg.complete = not msg.capped
        elif isinstance(frame, RstStreamFrame):
            x = self._exchange(frame.stream_id)
            code = ERROR_CODES.get(frame.error_code, str(frame.error_code))
            x.notes.append(f"stream reset by the {'client' if is_req else 'server'} ({code})")
        elif isinstance(frame, GoAwayFrame):
            code = ERROR_CODES.get(frame.error_code, str(frame.error_code))
            self.notes.append(f"GOAWAY from the {'client' if is_req else 'server'} ({code}), "
                              f"last stream {frame.last_stream_id}")
        elif isinstance(frame, SettingsFrame):
            size = frame.settings.get(SettingsFrame.HEADER_TABLE_SIZE)
            if size is not None:
                # the peer that sends SETTINGS bounds the table of the encoder talking to it
                other = self.dirs["response" if is_req else "request"]
                other.decoder.max_allowed_table_size = min(size, MAX_HPACK_TABLE)

    def _end_block(self, d: _Direction) -> None:
        frame, parts, ts = d.block
        d.block = None
        block = b"".join(parts)
        headers: list[tuple[str, str]] = []
        reliable = d.reliable
        try:
            headers = [(str(k).lower(), str(v)) for k, v in d.decoder.decode(block)]
        except hpack.HPACKError as exc:
            reliable = False
            d.reliable = False  # the table is out of step from here on
            note = f"header block not decodable ({type(exc).__name__})"
        else:
            note = None
        if isinstance(frame, PushPromiseFrame):
            self._exchange(frame.stream_id).notes.append("server push promised (not followed)")
            return
        x = self._exchange(frame.stream_id)
        if note:
            x.notes.append(note)
        is_req = d.name == "request"
        msg: HttpMessage = x.request if is_req else x.response
        pseudo = {k: v for k, v in headers if k.startswith(":")}
        regular = [(k, v) for k, v in headers if not k.startswith(":")]
        if is_req:
            # the first header block is the request's; a later one (after DATA) holds trailers
            if x.method is None and not msg.headers:
                msg.headers = regular
                msg.start_ns = msg.start_ns or ts
                msg.headers_reliable = reliable and msg.headers_reliable
                x.method = pseudo.get(":method")
                x.path = pseudo.get(":path")
                x.authority = pseudo.get(":authority") or msg.header("host")
            else:
                msg.trailers = regular
        else:
            status = pseudo.get(":status")
            if status and status.isdigit() and 100 <= int(status) < 200:
                x.informational.append(int(status))
                msg.start_ns = msg.start_ns or ts
            elif not msg.headers and x.status is None:
                x.status = int(status) if status and status.isdigit() else None
                msg.headers = regular
                msg.start_ns = msg.start_ns or ts
                msg.headers_reliable = reliable and msg.headers_reliable
            else:
                msg.trailers = regular
        if not reliable:
            msg.headers_reliable = False
        msg.end_ns = ts
        if "END_STREAM" in frame.flags:
            msg.complete = True


def _finalize(x: Exchange) -> None:
    """An exchange handed out: what its messages lack is said, and headers never seen not vouched for."""
    for msg in (x.request, x.response):
        length = msg.header("content-length")
        if (not msg.complete and msg.headers_reliable and length and length.isdigit()
                and int(length) == len(msg.body) and not (x.request.capped or x.response.capped or x.gaps)):
            # every declared byte arrived; only END_STREAM (often an empty DATA frame after the
            # body) was not read: curl, knowing the length, exits without reading it
            msg.complete = True
            x.notes.append("complete by content-length; END_STREAM not seen")
    if x.method is None:
        x.request.headers_reliable = False
    if x.status is None and x.response.start_ns is not None:
        x.response.headers_reliable = False
    if not x.request.complete:
        x.notes.append("request not complete when the capture ended")
    if not x.response.complete:
        x.notes.append("response not complete when the capture ended")
