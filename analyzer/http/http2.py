"""HTTP/2 exchanges from the two byte streams of a connection: frames with hyperframe, header
blocks with hpack (both from the h2 project), sans-IO.

One HPACK decoder per direction of each connection (the peers' mistake was one per process or per
direction across connections). When the capture began mid-connection, the decoders' dynamic tables
are unknown: header blocks that fail to decode, and every block after in that direction, mark the
stream's headers unreliable, while DATA frames still flow into bodies.

Bounded against hostile input: a header block (HEADERS plus CONTINUATIONs) over MAX_HEADER_BLOCK is
dropped and flagged, the HPACK table size is capped, a frame over MAX_FRAME_SIZE ends parsing of
that direction, and the bodies of unfinished streams share Limits.max_connection_body_bytes.
"""

from __future__ import annotations

import heapq

import hpack
from hpack.table import HeaderTable
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

from analyzer.model import ConnectionInfo, Exchange, HttpMessage, Limits, StreamGap, SyncState

CLIENT_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
FRAME_HEADER = 9
MAX_FRAME_SIZE = (1 << 24) - 1  # the format's own limit
END_STREAM, PADDED = 0x1, 0x8  # DATA frame flags
MAX_HEADER_BLOCK = 1 << 20  # encoded bytes of one header block (HEADERS plus CONTINUATIONs)
SCAN_WINDOW = 64 * 1024  # bytes searched for the start of frames after joining or a gap
MAX_NOTES = 64  # notes per exchange from frames a peer can repeat (resets, undecodable blocks)
MAX_CONN_NOTES = 64  # connection-level notes kept
KNOWN_TYPES = range(0, 10)
# frames that must carry a stream id, and those that must not
_STREAM_FRAMES = {0x0, 0x1, 0x2, 0x3, 0x5, 0x9}
_CONN_FRAMES = {0x4, 0x6, 0x7}

ERROR_CODES = {0: "NO_ERROR", 1: "PROTOCOL_ERROR", 2: "INTERNAL_ERROR", 3: "FLOW_CONTROL_ERROR",
               4: "SETTINGS_TIMEOUT", 5: "STREAM_CLOSED", 6: "FRAME_SIZE_ERROR", 7: "REFUSED_STREAM",
               8: "CANCEL", 9: "COMPRESSION_ERROR", 10: "CONNECT_ERROR", 11: "ENHANCE_YOUR_CALM",
               12: "INADEQUATE_SECURITY", 13: "HTTP_1_1_REQUIRED"}


def plain_data_frame(buf: bytes, pos: int) -> tuple[int, bool] | None:
    """(stream id, END_STREAM) of the frame at `pos` when it is a DATA frame without padding on a
    stream (as hyperframe would read it: the reserved bit cleared), else None: hyperframe reads it (and
    refuses a DATA frame on stream 0, or bad padding)."""
    if buf[pos + 3] != 0x0 or buf[pos + 4] & PADDED:
        return None
    sid = int.from_bytes(buf[pos + 5:pos + 9], "big") & 0x7FFFFFFF
    return (sid, bool(buf[pos + 4] & END_STREAM)) if sid else None


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


def chain_at(buf: bytes | bytearray, pos: int) -> bool | int:
    """frames_chain(buf, pos) as a verdict that knows when it is final: True or False, or the buffer
    length at which the answer may change (so a resync judges each position a bounded number of
    times, not once per arriving chunk)."""
    if len(buf) < pos + FRAME_HEADER:
        return pos + FRAME_HEADER
    end = plausible_frame(buf, pos)
    if end is None:
        return False
    if end >= len(buf):
        return True if end == len(buf) else end
    if len(buf) < end + FRAME_HEADER:
        return end + FRAME_HEADER
    return plausible_frame(buf, end) is not None


class _CountingTable(HeaderTable):
    """An HPACK table that counts the bytes its entries expanded to: indexed references are how a
    small header block decodes to a large one."""

    served = 0

    def get_by_index(self, index: int) -> tuple[bytes, bytes]:
        name, value = super().get_by_index(index)
        self.served += 32 + len(name) + len(value)
        return name, value


class _Direction:
    """Frame splitting and header decoding for one direction."""

    def __init__(self, name: str, reliable: bool, expect_preface: bool, limits: Limits):
        self.name = name
        self.buf = bytearray()  # appended to and trimmed in place: never copied whole per chunk
        self.ts = 0
        self.decoder = hpack.Decoder(max_header_list_size=limits.max_header_list_bytes)
        self.decoder.header_table = _CountingTable()
        self.decoder.max_allowed_table_size = limits.max_hpack_table_bytes
        self.reliable = reliable  # is the HPACK state known?
        self.expect_preface = expect_preface
        # do we know where frames begin? (seen from the start, or found again after joining or a gap)
        self.sync = SyncState.IN_SYNC if reliable else SyncState.JOINED_MID_STREAM
        self.block: tuple[HeadersFrame | PushPromiseFrame, list[bytes], int] | None = None
        self.block_size = 0
        # resync scan: positions below scan_next are judged, except those waiting (heap of
        # (buffer length needed, position)) for bytes that had not arrived
        self.scan_next = 0
        self.waiting: list[tuple[int, int]] = []
        self.gap_bytes = 0  # bytes lost in this direction so far
        self.gap_count = 0  # and the gaps that lost them
        # streams whose message in this direction is open and that still record gaps (StreamGap and
        # missing_bytes, as they come); the others are settled from gap_bytes when they leave
        self.recording: dict[int, Exchange] = {}

    def append(self, data: bytes) -> None:
        try:
            self.buf += data
        except BufferError:  # a view of the buffer outlived its parse (see drop)
            self.buf = self.buf + data

    def drop(self, n: int | None = None) -> None:
        """The buffer without its first n bytes (None: all), in place. A view of it that outlives the
        frame parse (a stack frame kept by a profiler or a debugger keeps hyperframe's slices) makes an
        in-place resize raise BufferError: then a new buffer, the same bytes."""
        try:
            if n is None:
                self.buf.clear()
            else:
                del self.buf[:n]
        except BufferError:
            self.buf = bytearray() if n is None else self.buf[n:]

    def reset_scan(self) -> None:
        self.scan_next = 0
        self.waiting = []


class Http2Connection:
    """Feed each direction's bytes and gaps; take the exchanges (one per stream) at the end."""

    def __init__(self, conn: ConnectionInfo, start_seen: bool, max_body: int | None = None,
                 sequence_base: int = 0, limits: Limits | None = None):
        self.conn = conn
        self.limits = Limits.of(limits, max_body)
        self.max_body = self.limits.max_body_bytes
        self.streams: dict[int, Exchange] = {}  # open streams, in order of appearance
        self._done: list[Exchange] = []  # streams moved out of `streams` to bound it, finalized
        # stream id -> direction -> (gap_bytes, gap_count) when the stream stopped recording gaps
        # with that direction's message still open (missing_bytes and gaps_omitted settle from it)
        self._gap_base: dict[int, dict[str, tuple[int, int]]] = {}
        self.sequence = sequence_base  # streams are numbered in order of appearance, from base + 1
        self._max_taken = -1  # highest stream id handed out by take_finished (none: one-shot as before)
        self.header_bytes = 0  # decoded header bytes of the connection (Limits.max_connection_header_bytes)
        # body bytes of each open, unfinished stream, and their sum (Limits.max_connection_body_bytes)
        self._held: dict[int, int] = {}
        self.held_body_bytes = 0
        self.notes: list[str] = []  # connection-level: GOAWAY, hostile input (the first MAX_CONN_NOTES)
        self.dirs = {
            "request": _Direction("request", start_seen, start_seen, self.limits),
            "response": _Direction("response", start_seen, False, self.limits),
        }

    # ---- input -------------------------------------------------------------------------------
    def feed_request(self, data: bytes, ts_ns: int) -> None:
        self._feed(self.dirs["request"], data, ts_ns)

    def feed_response(self, data: bytes, ts_ns: int) -> None:
        self._feed(self.dirs["response"], data, ts_ns)

    def gap(self, direction: str, length: int, reason: str) -> None:
        """Frames in flight in this direction lose bytes; HPACK state is unknown from here on. The
        gap is recorded on the open streams still recording (fewer than Limits.max_gap_records
        gaps); the others have it counted when they leave, so a flood of gaps costs each stream a
        bounded amount of work, not one step per gap."""
        d = self.dirs[direction]
        gap = StreamGap(direction, length, reason)
        d.gap_bytes += length
        d.gap_count += 1
        for sid, x in list(d.recording.items()):
            (x.request if direction == "request" else x.response).missing_bytes += length
            x.add_gap(gap, self.limits.max_gap_records)
            if len(x.gaps) >= self.limits.max_gap_records:
                self._stop_recording(sid)
        d.drop()
        d.reset_scan()
        d.block = None
        d.reliable = False
        if d.sync is not SyncState.DEAD:
            d.sync = SyncState.AFTER_GAP
        self._conn_note(gap.note)

    def finish(self) -> list[Exchange]:
        for d in self.dirs.values():
            if d.buf and d.sync is not SyncState.DEAD:
                self._conn_note(f"{len(d.buf)} bytes of an unfinished frame in the {d.name} stream")
        for sid, x in self.streams.items():
            self._settle(sid, x)
            _finalize(x)
        out = sorted([*self._done, *self.streams.values()], key=lambda x: x.stream_id)
        self._done, self.streams, self._held, self.held_body_bytes = [], {}, {}, 0
        return out

    def salvage(self) -> list[Exchange]:
        """Every exchange held, as it stands (after a parser error: no more parsing)."""
        out = sorted([*self._done, *self.streams.values()], key=lambda x: x.stream_id)
        self._done, self.streams, self._held, self.held_body_bytes = [], {}, {}, 0
        return out

    def take_finished(self) -> list[Exchange]:
        """Streams whose request and response both ended, in stream order; the connection goes on.
        Later frames of a stream taken (a late RST_STREAM) are ignored: stream ids only grow, so
        an id at or below the highest taken that is not open is one of them."""
        done = sorted(k for k, x in self.streams.items() if x.request.complete and x.response.complete)
        out = self._done
        self._done = []
        for k in done:
            x = self.streams.pop(k)
            self._settle(k, x)
            _finalize(x)
            out.append(x)
            self._max_taken = max(self._max_taken, k)
        return sorted(out, key=lambda x: x.stream_id)

    # ---- frames ------------------------------------------------------------------------------
    def _feed(self, d: _Direction, data: bytes, ts_ns: int) -> None:
        if d.sync is SyncState.DEAD:
            return
        if not d.buf and d.sync is SyncState.IN_SYNC and not d.expect_preface and d.block is None \
                and len(data) >= FRAME_HEADER and int.from_bytes(data[:3], "big") == len(data) - FRAME_HEADER:
            plain = plain_data_frame(data, 0)
            if plain:  # a write of one whole DATA frame (a streamed token): the loop below, no buffer
                d.ts = ts_ns
                self._data(d, plain[0], data[FRAME_HEADER:], plain[1], ts_ns)
                return
        d.append(data)
        d.ts = ts_ns
        if d.expect_preface:
            if len(d.buf) < len(CLIENT_PREFACE):
                if not CLIENT_PREFACE.startswith(d.buf):
                    d.expect_preface = False
                return
            if d.buf.startswith(CLIENT_PREFACE):
                d.drop(len(CLIENT_PREFACE))
            d.expect_preface = False
        if d.sync.seeking and not self._seek(d):
            return
        pos = 0
        with memoryview(d.buf) as view:
            while len(d.buf) - pos >= FRAME_HEADER:
                length = int.from_bytes(d.buf[pos:pos + 3], "big")
                if length > MAX_FRAME_SIZE or length > (1 << 20) and d.buf[pos + 3] != 0x0:
                    d.sync = SyncState.DEAD
                    self._conn_note(f"oversized frame ({length} bytes) in the {d.name} stream: "
                                    "parsing stopped")
                    break
                if len(d.buf) - pos < FRAME_HEADER + length:
                    break
                plain = d.block is None and plain_data_frame(d.buf, pos)
                if plain:  # most frames of a stream: read without hyperframe's objects
                    data = view[pos + FRAME_HEADER:pos + FRAME_HEADER + length].tobytes()
                    pos += FRAME_HEADER + length
                    self._data(d, plain[0], data, plain[1], ts_ns)
                    continue
                try:
                    frame, _ = Frame.parse_frame_header(view[pos:pos + FRAME_HEADER])
                    frame.parse_body(view[pos + FRAME_HEADER:pos + FRAME_HEADER + length])
                except (HyperframeError, ValueError) as exc:
                    self._conn_note(f"invalid frame in the {d.name} stream: {exc}")
                    pos += FRAME_HEADER + length
                    continue
                pos += FRAME_HEADER + length
                self._frame(d, frame, ts_ns)
        d.drop(None if d.sync is SyncState.DEAD else pos)

    def _seek(self, d: _Direction) -> bool:
        """Find where frames begin (capture began mid-connection, or after a gap) among the first
        SCAN_WINDOW bytes; True when found (d.buf then starts there). Each position is judged once,
        or again when the bytes it waited for have come: work linear in the bytes scanned."""
        n, found = len(d.buf), None
        while d.waiting and d.waiting[0][0] <= n:
            _, pos = heapq.heappop(d.waiting)
            verdict = chain_at(d.buf, pos)
            if verdict is True:
                found = pos if found is None else min(found, pos)
            elif verdict is not False:
                heapq.heappush(d.waiting, (verdict, pos))
        pos = d.scan_next
        while found is None and pos < min(n, SCAN_WINDOW):
            verdict = chain_at(d.buf, pos)
            if verdict is True:
                found = pos
            elif verdict is not False:
                heapq.heappush(d.waiting, (verdict, pos))
            pos += 1
        d.scan_next = pos
        if found is not None:
            d.drop(found)
            d.reset_scan()
            d.sync = SyncState.IN_SYNC
            return True
        if n > SCAN_WINDOW:
            d.drop(n - FRAME_HEADER)
            d.reset_scan()
        return False

    def _exchange(self, stream_id: int) -> Exchange:
        x = self.streams.get(stream_id)
        if x is None:
            if stream_id <= self._max_taken:
                return Exchange(self.conn, "2", 0, stream_id=stream_id)  # taken already: a throwaway
            self.sequence += 1
            x = Exchange(self.conn, "2", self.sequence, stream_id=stream_id)
            self.streams[stream_id] = x
            for d in self.dirs.values():
                d.recording[stream_id] = x
            if len(self.streams) > self.limits.max_open_streams:
                self._evict()
        return x

    def _evict(self) -> None:
        """Over Limits.max_open_streams: the oldest stream is handed out as it stands."""
        sid = next(iter(self.streams))
        x = self.streams.pop(sid)
        self.conn.hit("max_open_streams")
        if not x.complete:
            _note(x, f"more than {self.limits.max_open_streams} open streams: stream no longer followed")
        self._settle(sid, x)
        _finalize(x)
        self._done.append(x)
        self._max_taken = max(self._max_taken, sid)

    def _stop_recording(self, sid: int) -> None:
        """Gaps are no longer recorded on this stream; those of its open messages are counted."""
        for name, d in self.dirs.items():
            if d.recording.pop(sid, None) is not None:
                self._gap_base.setdefault(sid, {})[name] = (d.gap_bytes, d.gap_count)

    def _release(self, sid: int) -> None:
        """The stream's bodies no longer count against the connection's budget (it finished or left)."""
        self.held_body_bytes -= self._held.pop(sid, 0)

    def _completed(self, x: Exchange, direction: str) -> None:
        """A message just ended: later gaps in its direction do not touch it."""
        if x.complete:
            self._release(x.stream_id)
        d = self.dirs[direction]
        if d.recording.get(x.stream_id) is x:
            del d.recording[x.stream_id]
        elif self.streams.get(x.stream_id) is x:
            before = self._gap_base.get(x.stream_id, {}).pop(direction, None)
            if before is not None:
                self._count_gaps(x, direction, before)

    def _settle(self, sid: int, x: Exchange) -> None:
        """The stream leaves: the bytes lost while its messages were open are all counted."""
        self._release(sid)
        for d in self.dirs.values():
            d.recording.pop(sid, None)
        for direction, before in self._gap_base.pop(sid, {}).items():
            self._count_gaps(x, direction, before)

    def _count_gaps(self, x: Exchange, direction: str, before: tuple[int, int]) -> None:
        """The gaps of a direction since `before` (gap_bytes, gap_count), counted on a stream that
        no longer records them."""
        d = self.dirs[direction]
        (x.request if direction == "request" else x.response).missing_bytes += d.gap_bytes - before[0]
        x.omit_gaps(d.gap_count - before[1], self.limits.max_gap_records)

    def _conn_note(self, text: str) -> None:
        if len(self.notes) < MAX_CONN_NOTES:
            self.notes.append(text)

    def _frame(self, d: _Direction, frame: Frame, ts: int) -> None:
        is_req = d.name == "request"
        if d.block is not None and not isinstance(frame, ContinuationFrame):
            self._conn_note(f"header block interrupted by a {type(frame).__name__} frame")
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
                _note(x, f"header block over {MAX_HEADER_BLOCK} bytes (CONTINUATION flood): dropped")
                d.block = None
                d.reliable = False  # the dropped block may have changed the HPACK table
                return
            d.block[1].append(frame.data)
            if "END_HEADERS" in frame.flags:
                self._end_block(d)
        elif isinstance(frame, DataFrame):
            self._data(d, frame.stream_id, frame.data, "END_STREAM" in frame.flags, ts)
        elif isinstance(frame, RstStreamFrame):
            x = self._exchange(frame.stream_id)
            code = ERROR_CODES.get(frame.error_code, str(frame.error_code))
            _note(x, f"stream reset by the {'client' if is_req else 'server'} ({code})")
        elif isinstance(frame, GoAwayFrame):
            code = ERROR_CODES.get(frame.error_code, str(frame.error_code))
            self._conn_note(f"GOAWAY from the {'client' if is_req else 'server'} ({code}), "
                            f"last stream {frame.last_stream_id}")
        elif isinstance(frame, SettingsFrame):
            size = frame.settings.get(SettingsFrame.HEADER_TABLE_SIZE)
            if size is not None:
                # the peer that sends SETTINGS bounds the table of the encoder talking to it
                other = self.dirs["response" if is_req else "request"]
                other.decoder.max_allowed_table_size = min(size, self.limits.max_hpack_table_bytes)

    def _data(self, d: _Direction, stream_id: int, data: bytes, end_stream: bool, ts: int) -> None:
        x = self.streams.get(stream_id)
        held = x is not None  # an open stream (else a new one, or a throwaway of one taken already)
        if not held:
            x = self._exchange(stream_id)
            held = self.streams.get(stream_id) is x
        msg = x.request if d.name == "request" else x.response
        if msg.start_ns is None:
            msg.start_ns = ts
            msg.headers_reliable = False  # body before any headers we saw
        size = len(data)
        room = self.max_body - len(msg.body)
        held = held and not x.complete
        shared = self.limits.max_connection_body_bytes - self.held_body_bytes
        over_shared = held and shared < min(room, size)  # the connection's budget binds
        if over_shared:
            room = shared
            self.conn.hit("max_connection_body_bytes")
        if size > room:
            if not msg.capped:
                x.notes.append(f"{d.name} body over the connection's body budget" if over_shared
                               else f"{d.name} body over the size cap")
            msg.capped = True
        if room > 0:
            msg.add_body(data if size <= room else data[:room], ts)
            if held:
                kept = min(room, size)
                self._held[x.stream_id] = self._held.get(x.stream_id, 0) + kept
                self.held_body_bytes += kept
        msg.end_ns = ts
        if end_stream:
            msg.complete = not msg.capped
            if msg.complete:
                self._completed(x, d.name)

    def _decode(self, d: _Direction, block: bytes) -> tuple[list[tuple[str, str]], str | None]:
        """The headers of a block within the per-block and per-connection budgets, or a note saying
        why not (the direction's HPACK state is then unknown)."""
        left = self.limits.max_connection_header_bytes - self.header_bytes
        if left <= 0:
            d.reliable = False
            return [], "header block not decoded (connection header budget spent)"
        d.decoder.max_header_list_size = min(self.limits.max_header_list_bytes, left)
        table = d.decoder.header_table
        table.served = 0
        try:
            headers = [(str(k).lower(), str(v)) for k, v in d.decoder.decode(block)]
        except hpack.HPACKError as exc:
            d.reliable = False  # the table is out of step from here on
            if isinstance(exc, hpack.OversizedHeaderListError):
                self.conn.hit("max_header_list_bytes" if left > self.limits.max_header_list_bytes
                              else "max_connection_header_bytes")
            return [], f"header block not decodable ({type(exc).__name__})"
        finally:
            # what decoding cost, failed or not: the bytes indexed references expanded to, and the
            # literals (at most the block itself, Huffman-expanded)
            self.header_bytes += table.served + 2 * len(block)
        return headers, None

    def _end_block(self, d: _Direction) -> None:
        frame, parts, ts = d.block
        d.block = None
        block = b"".join(parts)
        reliable = d.reliable
        headers, note = self._decode(d, block)
        reliable = reliable and note is None
        if isinstance(frame, PushPromiseFrame):
            _note(self._exchange(frame.stream_id), "server push promised (not followed)")
            return
        x = self._exchange(frame.stream_id)
        if note:
            _note(x, note)
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
            self._completed(x, d.name)


def _note(x: Exchange, text: str) -> None:
    """A note that hostile input could repeat per frame: at most MAX_NOTES on an exchange."""
    if len(x.notes) < MAX_NOTES:
        x.notes.append(text)


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
