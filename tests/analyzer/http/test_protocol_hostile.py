"""The HTTP parsers under hostile input: every loop ends, and what one connection costs is bounded by
Limits. Bounds are asserted by counters (calls made, bytes held or allocated), never by the clock."""

from __future__ import annotations

import random
import tracemalloc

import h11
import hpack
import pytest
from hyperframe.frame import DataFrame, HeadersFrame

from analyzer.http import http2
from analyzer.http.http1 import Http1Connection
from analyzer.http.http2 import CLIENT_PREFACE, Http2Connection
from analyzer.model import ConnectionInfo, Exchange, Limits
from helpers.hostile_inputs import connection_rows, run_analysis


def conn() -> ConnectionInfo:
    return ConnectionInfo("n", "1-1-1", 1, 1, "test", 0, 0, "/lib/libssl.so.3", seen_from_start=True)


def headers_frame(stream: int, block: bytes, end_stream: bool = False) -> bytes:
    f = HeadersFrame(stream, data=block)
    f.flags.add("END_HEADERS")
    if end_stream:
        f.flags.add("END_STREAM")
    return f.serialize()


def data_frame(stream: int, payload: bytes, end_stream: bool = False) -> bytes:
    f = DataFrame(stream, data=payload)
    if end_stream:
        f.flags.add("END_STREAM")
    return f.serialize()


REQUEST = [(":method", "POST"), (":path", "/v1/chat/completions"), (":scheme", "https"),
           (":authority", "api.example.com")]


@pytest.fixture
def h11_calls(monkeypatch):
    """Counts h11 next_event calls; a spinning pump fails fast instead of hanging the run."""
    calls = {"n": 0}
    original = h11.Connection.next_event

    def counted(self):
        calls["n"] += 1
        if calls["n"] > 100_000:
            raise AssertionError("h11 pump does not terminate")
        return original(self)

    monkeypatch.setattr(h11.Connection, "next_event", counted)
    return calls


# ---- HTTP/1 ----------------------------------------------------------------------------------
def test_short_request_body_then_response_then_close_ends(h11_calls):
    # a client gives up after an early 401: its body stops short of Content-Length, the connection closes
    h1 = Http1Connection(conn())
    h1.feed_request(b"POST /v1/chat/completions HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n"
                    + b"x" * 10, 1)
    h1.feed_response(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n", 2)
    (x,) = h1.finish(closed=True)
    assert x.status == 401 and x.response.complete and not x.request.complete
    assert h11_calls["n"] < 50


def test_fuzz_seed_37_ends(h11_calls):
    run_analysis(connection_rows(random.Random(37)))
    assert h11_calls["n"] < 10_000


def test_bridged_gap_is_not_allocated():
    gib = 1 << 30
    h1 = Http1Connection(conn())
    h1.feed_request(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % (gib + 20)
                    + b"a" * 10, 1)
    tracemalloc.start()
    try:
        h1.gap("request", gib, "capture_limit")
        h1.feed_request(b"b" * 10, 2)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20  # a MiB, for a GiB gap
    h1.feed_response(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", 3)
    (x,) = h1.finish(closed=True)
    assert bytes(x.request.body) == b"a" * 10 + b"b" * 10
    assert x.request.missing_bytes == gib and not x.request.complete
    assert x.response.complete and bytes(x.response.body) == b"ok"


def test_bridged_gap_then_the_body_ends_on_time():
    h1 = Http1Connection(conn())
    h1.feed_request(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 30\r\n\r\n" + b"a" * 10, 1)
    h1.gap("request", 20, "ringbuf_full")  # the rest of the body: the message ends with the gap
    h1.feed_request(b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n", 2)
    h1.feed_response(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n" * 2, 3)
    first, second = h1.finish(closed=True)
    assert first.request.missing_bytes == 20 and not first.request.complete
    assert second.path == "/next" and second.complete


@pytest.mark.parametrize("side", ["request", "response"])
def test_http1_body_cap(side):
    h1 = Http1Connection(conn(), limits=Limits(max_body_bytes=1000))
    body = b"z" * 10_000
    h1.feed_request(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % len(body)
                    + (body if side == "request" else b"").ljust(len(body), b"q"), 1)
    for i in range(0, len(body), 100):  # the response in small chunks: the cap holds per chunk
        h1.feed_response((b"HTTP/1.1 200 OK\r\nContent-Length: 10000\r\n\r\n" if i == 0 else b"")
                         + body[i:i + 100], 2 + i)
    (x,) = h1.finish(closed=True)
    msg = getattr(x, side)
    assert len(msg.body) == 1000 and msg.capped and not msg.complete
    assert sum(n == f"{side} body over the size cap" for n in x.notes) == 1


# ---- HTTP/2 ----------------------------------------------------------------------------------
def test_hpack_budget_per_connection():
    limits = Limits(max_connection_header_bytes=1 << 20, max_header_list_bytes=256 * 1024)
    h2 = Http2Connection(conn(), start_seen=True, limits=limits)
    enc = hpack.Encoder()
    # one 4 KB header goes into the dynamic table; then each 1-byte reference to it decodes to 4 KB
    first = enc.encode(REQUEST + [("x-big", "v" * 4000)])
    h2.feed_request(CLIENT_PREFACE + headers_frame(1, first, end_stream=True), 1)
    bomb = b"\xbe" * 60  # index 62: the big header, 60 times (240 KB decoded from 60 bytes)
    wire = b"".join(headers_frame(2 * i + 3, bomb, end_stream=True) for i in range(200))
    h2.feed_request(wire, 2)
    # 200 blocks would decode to 48 MB; the connection stops at its budget
    assert h2.header_bytes <= limits.max_connection_header_bytes + limits.max_header_list_bytes + len(wire)
    assert "max_connection_header_bytes" in h2.conn.limits_hit
    xs = h2.finish()
    assert len(xs) == 201
    dropped = [x for x in xs if any("budget spent" in n for n in x.notes)]
    assert dropped and all(not x.request.headers and not x.request.headers_reliable for x in dropped)


def test_hpack_block_over_the_per_block_budget_is_dropped():
    limits = Limits(max_header_list_bytes=16 * 1024)
    h2 = Http2Connection(conn(), start_seen=True, limits=limits)
    enc = hpack.Encoder()
    block = enc.encode(REQUEST + [("x-big", "v" * 4000)]) + b"\xbe" * 10  # 44 KB decoded
    h2.feed_request(CLIENT_PREFACE + headers_frame(1, block, end_stream=True), 1)
    (x,) = h2.finish()
    assert not x.request.headers and x.request.headers_reliable is False
    assert any("OversizedHeaderListError" in n for n in x.notes)
    assert "max_header_list_bytes" in h2.conn.limits_hit


def test_hpack_table_size_bounded():
    h2 = Http2Connection(conn(), start_seen=True, limits=Limits(max_hpack_table_bytes=8192))
    block = b"\x3f\xe1\x7f" + hpack.Encoder().encode(REQUEST)  # table size update to 16384
    h2.feed_request(CLIENT_PREFACE + headers_frame(1, block, end_stream=True), 1)
    (x,) = h2.finish()
    assert any("not decodable" in n for n in x.notes)
    assert h2.dirs["request"].decoder.header_table.maxsize <= 8192


def test_resync_scan_is_linear(monkeypatch):
    calls = {"n": 0}
    original = http2.chain_at

    def counted(buf, pos):
        calls["n"] += 1
        return original(buf, pos)

    monkeypatch.setattr(http2, "chain_at", counted)
    h2 = Http2Connection(conn(), start_seen=False)
    # the worst case: every position looks like a frame header whose frame is not there yet
    junk = b"\x01" * (32 * 1024)
    for i in range(0, len(junk), 16):
        h2.feed_request(junk[i:i + 16], i)
    assert calls["n"] <= 4 * len(junk)  # was ~ rows x bytes: 2048 x 32K
    # and it still finds frames after the junk, wherever a row boundary falls
    h2.feed_request(data_frame(1, b"hello") + data_frame(1, b"!", end_stream=True), 99)
    assert h2.dirs["request"].sync.value == "in sync"


def rescan_start(chunks: list[bytes]) -> int | None:
    """Where the former resync (every position rescanned on every chunk) found frames to begin."""
    buf = b""
    for chunk in chunks:
        buf += chunk
        for pos in range(min(len(buf), http2.SCAN_WINDOW)):
            if http2.frames_chain(buf, pos):
                return len(buf) - pos  # counted from the end: both keep the same tail
    return None


def test_resync_finds_the_same_start_as_the_full_rescan(monkeypatch):
    rng = random.Random(5)
    for _ in range(200):
        junk = bytes(rng.choice([rng.randrange(256), rng.randrange(10)]) for _ in range(rng.randrange(120)))
        wire = junk + data_frame(1, b"a" * rng.randrange(50)) + data_frame(1, b"b", end_stream=True)
        step = rng.randint(1, 20)
        chunks = [wire[i:i + step] for i in range(0, len(wire), step)]
        h2 = Http2Connection(conn(), start_seen=False)
        found = []
        seek = h2._seek

        def spied(d, seek=seek, found=found):
            ok = seek(d)
            if ok:
                found.append(len(d.buf))  # the tail kept from the start found
            return ok

        monkeypatch.setattr(h2, "_seek", spied)
        for chunk in chunks:
            h2.feed_request(chunk, 1)
            if found:
                break
        assert (found[0] if found else None) == rescan_start(chunks)


def test_gap_records_bounded_and_work_independent_of_open_streams(monkeypatch):
    calls = {"n": 0}
    original = Exchange.add_gap

    def counted(self, gap, limit):
        calls["n"] += 1
        return original(self, gap, limit)

    monkeypatch.setattr(Exchange, "add_gap", counted)
    limits = Limits(max_gap_records=4)
    h2 = Http2Connection(conn(), start_seen=True, limits=limits)
    enc = hpack.Encoder()
    streams = 300
    h2.feed_request(CLIENT_PREFACE + b"".join(headers_frame(2 * i + 1, enc.encode(REQUEST))
                                              for i in range(streams)), 1)
    gaps = 1000
    for _ in range(gaps):
        h2.gap("request", 3, "ringbuf_full")
    assert calls["n"] <= streams * limits.max_gap_records  # not streams x gaps
    xs = h2.finish()
    assert len(xs) == streams
    for x in xs:
        assert len(x.gaps) == 4 and x.gaps_omitted == gaps - 4
        assert x.request.missing_bytes == 3 * gaps  # every gap still counted
        assert len(x.notes) < 10


def test_open_streams_bounded():
    limits = Limits(max_open_streams=10)
    h2 = Http2Connection(conn(), start_seen=True, limits=limits)
    enc = hpack.Encoder()
    for i in range(100):
        preface = CLIENT_PREFACE if i == 0 else b""
        h2.feed_request(preface + headers_frame(2 * i + 1, enc.encode(REQUEST)), i)
        assert len(h2.streams) <= 10
    # a late frame of a stream handed out is not followed (no new stream state)
    h2.feed_request(data_frame(1, b"late", end_stream=True), 200)
    assert len(h2.streams) <= 10
    xs = h2.finish()
    assert [x.stream_id for x in xs] == [2 * i + 1 for i in range(100)]
    assert "max_open_streams" in h2.conn.limits_hit
    assert sum(any("no longer followed" in n for n in x.notes) for x in xs) == 90


@pytest.mark.parametrize("side", ["request", "response"])
def test_http2_body_cap(side):
    h2 = Http2Connection(conn(), start_seen=True, limits=Limits(max_body_bytes=1000))
    enc, dec = hpack.Encoder(), hpack.Encoder()
    h2.feed_request(CLIENT_PREFACE + headers_frame(1, enc.encode(REQUEST)), 1)
    h2.feed_response(headers_frame(1, dec.encode([(":status", "200")])), 2)
    feed = h2.feed_request if side == "request" else h2.feed_response
    for i in range(100):
        feed(data_frame(1, b"z" * 100, end_stream=i == 99), 3 + i)
    (x,) = h2.finish()
    msg = getattr(x, side)
    assert len(msg.body) == 1000 and msg.capped and not msg.complete
    assert sum(n == f"{side} body over the size cap" for n in x.notes) == 1


def test_repeated_resets_do_not_grow_notes():
    h2 = Http2Connection(conn(), start_seen=True)
    enc = hpack.Encoder()
    rst = bytes.fromhex("000004030000000001") + (8).to_bytes(4, "big")
    h2.feed_request(CLIENT_PREFACE + headers_frame(1, enc.encode(REQUEST)) + rst * 5000, 1)
    (x,) = h2.finish()
    assert len(x.notes) <= http2.MAX_NOTES + 2  # and what the end of input says of it
    assert len(h2.notes) <= http2.MAX_CONN_NOTES
