"""The parsers keep their state in typed fields (HttpMessage.capped and missing_bytes, Exchange.gaps,
SyncState), never in note text: notes are reworded or dropped here mid-parse, and what the parsers
decide stays the same."""

from __future__ import annotations

import hpack
import pytest
from hyperframe.frame import DataFrame, HeadersFrame

from analyzer.ai.events import EventOptions
from analyzer.ai.exchange_events import exchange_events
from analyzer.http import http1
from analyzer.http.http1 import Http1Connection
from analyzer.http.http2 import CLIENT_PREFACE, Http2Connection
from analyzer.model import ConnectionInfo, Exchange, StreamGap, SyncState
from helpers.exchanges import REG, exchange


def conn() -> ConnectionInfo:
    return ConnectionInfo("n", "1-1-1", 1, 1, "test", 0, 0, "/lib/libssl.so.3", seen_from_start=True)


def headers(enc: hpack.Encoder, stream: int, fields: list[tuple[str, str]], end_stream: bool) -> bytes:
    f = HeadersFrame(stream)
    f.data = enc.encode(fields)
    f.flags.add("END_HEADERS")
    if end_stream:
        f.flags.add("END_STREAM")
    return f.serialize()


def data(stream: int, payload: bytes, end_stream: bool) -> bytes:
    f = DataFrame(stream)
    f.data = payload
    if end_stream:
        f.flags.add("END_STREAM")
    return f.serialize()


REQUEST_H2 = [(":method", "POST"), (":path", "/v1/chat/completions"), (":scheme", "https"),
              (":authority", "api.example.com")]


def test_http2_capped_body_is_incomplete_whatever_the_notes_say():
    h2 = Http2Connection(conn(), start_seen=True, max_body=10)
    enc = hpack.Encoder()
    h2.feed_request(CLIENT_PREFACE + headers(enc, 1, REQUEST_H2, end_stream=False), 1)
    h2.feed_request(data(1, b"x" * 25, end_stream=False), 2)
    x = h2.streams[1]
    assert x.request.capped and x.notes == ["request body over the size cap"]
    x.notes[:] = ["reworded by someone"]
    h2.feed_request(data(1, b"", end_stream=True), 3)
    assert not x.request.complete and bytes(x.request.body) == b"x" * 10


def test_http2_capped_body_is_not_completed_by_content_length():
    h2 = Http2Connection(conn(), start_seen=True, max_body=10)
    enc, dec = hpack.Encoder(), hpack.Encoder()
    h2.feed_request(CLIENT_PREFACE + headers(enc, 1, REQUEST_H2, end_stream=True), 1)
    h2.feed_response(headers(dec, 1, [(":status", "200"), ("content-length", "10")], end_stream=False)
                     + data(1, b"y" * 30, end_stream=False), 2)
    h2.streams[1].notes.clear()
    (x,) = h2.finish()
    # ten bytes kept, content-length 10: still not complete, the body was capped
    assert x.response.capped and not x.response.complete
    assert "complete by content-length; END_STREAM not seen" not in x.notes


def test_http2_gap_sets_the_typed_gap_state():
    h2 = Http2Connection(conn(), start_seen=True)
    enc, dec = hpack.Encoder(), hpack.Encoder()
    h2.feed_request(CLIENT_PREFACE + headers(enc, 1, REQUEST_H2, end_stream=True), 1)
    h2.feed_response(headers(dec, 1, [(":status", "200"), ("content-length", "4")], end_stream=False)
                     + data(1, b"okok", end_stream=False), 2)
    assert h2.dirs["response"].sync is SyncState.IN_SYNC
    h2.gap("response", 7, "ringbuf_full")
    assert h2.dirs["response"].sync is SyncState.AFTER_GAP
    x = h2.streams[1]
    assert x.gaps == [StreamGap("response", 7, "ringbuf_full")] and x.response.missing_bytes == 7
    assert x.request.missing_bytes == 0  # it had ended: the gap did not touch it
    x.notes.clear()
    h2.finish()
    # every declared byte is there, but a gap touched the stream: not complete by content-length
    assert not x.response.complete


def test_http2_joined_mid_stream_then_in_sync():
    h2 = Http2Connection(conn(), start_seen=False)
    assert h2.dirs["request"].sync is SyncState.JOINED_MID_STREAM
    h2.feed_request(data(1, b"a", end_stream=False) + data(1, b"b", end_stream=True), 1)
    assert h2.dirs["request"].sync is SyncState.IN_SYNC


def test_http2_oversized_frame_is_dead_after_gap_too():
    h2 = Http2Connection(conn(), start_seen=True)
    header = (5 << 20).to_bytes(3, "big") + b"\x01\x04" + (1).to_bytes(4, "big")
    h2.feed_request(CLIENT_PREFACE + header, 1)
    assert h2.dirs["request"].sync is SyncState.DEAD
    h2.gap("request", 3, "missing")
    assert h2.dirs["request"].sync is SyncState.DEAD


BODY = b'{"model": "m", "messages": []}'
REQUEST = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: api.example.com\r\nContent-Length: %d\r\n\r\n"
           % len(BODY))
RESPONSE = b'HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n{"ok": true}'


@pytest.fixture
def made(monkeypatch) -> list[Exchange]:
    """The exchanges the HTTP/1 parser creates, reachable while they are still in flight."""
    out: list[Exchange] = []

    def spy(*args, **kwargs) -> Exchange:
        out.append(Exchange(*args, **kwargs))
        return out[-1]

    monkeypatch.setattr(http1, "Exchange", spy)
    return out


def test_http1_capped_body_is_incomplete_whatever_the_notes_say(made):
    h = Http1Connection(conn(), max_body=15)
    h.feed_request(REQUEST + BODY[:20], 1)
    (x,) = made
    assert x.request.capped and x.notes == ["request body over the size cap"]
    x.notes.clear()
    h.feed_request(BODY[20:], 2)
    h.feed_response(RESPONSE, 3)
    (x,) = h.finish(closed=True)
    assert not x.request.complete and x.response.complete
    assert x.notes == []  # the cap is said once, and not said again once the note is gone


def test_http1_bridged_gap_is_typed_and_keeps_the_message_incomplete(made):
    h = Http1Connection(conn())
    h.feed_request(REQUEST + BODY[:10], 1)
    h.gap("request", 5, "over_capture_limit")
    (x,) = made
    assert x.gaps == [StreamGap("request", 5, "over_capture_limit")] and x.request.missing_bytes == 5
    x.notes[:] = ["reworded"]
    h.feed_request(BODY[15:], 2)
    h.feed_response(RESPONSE, 3)
    (x,) = h.finish(closed=True)
    assert not x.request.complete and x.response.complete


def test_http1_resumed_after_gap_is_a_typed_gap_of_the_next_exchange():
    h = Http1Connection(conn())
    h.feed_request(REQUEST, 1)
    h.gap("request", 1000, "ringbuf_full")  # the body is 30 bytes: the gap cannot be bridged
    h.feed_request(b"junk\r\n" + REQUEST + BODY, 2)
    h.feed_response(RESPONSE, 3)
    first, second = h.finish(closed=True)
    assert first.gaps == [StreamGap("request", 1000, "ringbuf_full")] and not first.request.complete
    assert second.gaps == [StreamGap("request", 1000, "ringbuf_full", resumed=True)]
    assert second.notes == ["parsing resumed after 1000 bytes missing in the request stream (ringbuf_full)"]
    assert second.request.complete and second.response.complete


def test_event_limitations_come_from_typed_gaps():
    x = exchange("api.openai.com", "/v1/chat/completions", {"model": "gpt-4o", "messages": []},
                 b'{"choices": []}')
    x.gaps = [StreamGap("response", 9, "ringbuf_full"), StreamGap("request", 3, "missing", resumed=True)]
    x.notes = ["response body over the size cap", "some note with missing in it"]
    (ev,) = [e for e in exchange_events(x, REG, EventOptions()) if e["event_type"] == "ai.request"]
    assert ev["confidence"]["limitations"] == [
        "9 bytes missing in the response stream (ringbuf_full)",
        "parsing resumed after 3 bytes missing in the request stream (missing)"]


def _two_streams() -> list[tuple[str, bytes]]:
    enc, dec = hpack.Encoder(), hpack.Encoder()
    wire = [("request", CLIENT_PREFACE + headers(enc, 1, REQUEST_H2, end_stream=False)),
            ("request", data(1, b'{"model": "m"}', end_stream=True)),
            ("request", headers(enc, 3, REQUEST_H2, end_stream=True)),
            ("response", headers(dec, 1, [(":status", "200")], end_stream=False)),
            ("response", data(1, b"a" * 40_000, end_stream=True)),
            ("response", headers(dec, 3, [(":status", "404")], end_stream=True))]
    # cut into pieces that split frames, so bytes wait in the buffer between feeds
    pieces = []
    for direction, payload in wire:
        pieces += [(direction, payload[i:i + 777]) for i in range(0, len(payload), 777)]
    return pieces


def _parse(hold_views: bool) -> list[tuple]:
    h2 = Http2Connection(conn(), start_seen=True)
    held = []
    for ts, (direction, piece) in enumerate(_two_streams(), 1):
        (h2.feed_request if direction == "request" else h2.feed_response)(piece, ts)
        if hold_views:  # what a stack frame kept by a profiler keeps: a view of each buffer
            held += [memoryview(d.buf)[:1] for d in h2.dirs.values()]
    return [(x.stream_id, x.request.headers, bytes(x.request.body), x.response.headers,
             bytes(x.response.body), x.request.complete, x.response.complete, x.notes) for x in h2.finish()]


def test_http2_views_of_its_buffers_held_elsewhere_change_nothing():
    """A view of a direction's buffer kept past the parse (Dask's profiler keeps sampled stack frames,
    and with them hyperframe's slices) blocks resizing the buffer in place: the parser then works on a
    new buffer, and every exchange is the same."""
    plain = _parse(hold_views=False)
    assert [x[0] for x in plain] == [1, 3] and plain[0][4] == b"a" * 40_000
    assert _parse(hold_views=True) == plain
