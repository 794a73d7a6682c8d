"""Hostile and broken input to the protocol layer: bounded time and memory, flagged, never raised."""

from __future__ import annotations

import gzip
import time
import zlib

import brotli
import hpack
import zstandard
from hyperframe.frame import ContinuationFrame, DataFrame, HeadersFrame, SettingsFrame

from analyzer.http.bodies import SseParser, decode_body, split_ndjson
from analyzer.http.http1 import Http1Connection
from analyzer.http.http2 import CLIENT_PREFACE, Http2Connection
from analyzer.model import ConnectionInfo
from analyzer.sinks.exchanges_jsonl import exchange_to_dict


def conn() -> ConnectionInfo:
    return ConnectionInfo("n", "1-1-1", 1, 1, "test", 0, 0, "/lib/libssl.so.3", seen_from_start=True)


def request_headers(enc: hpack.Encoder, stream: int = 1, end_stream: bool = True) -> bytes:
    f = HeadersFrame(stream)
    f.data = enc.encode([(":method", "POST"), (":path", "/v1/chat/completions"), (":scheme", "https"),
                         (":authority", "api.example.com"), ("authorization", "Bearer sk-secret")])
    f.flags.add("END_HEADERS")
    if end_stream:
        f.flags.add("END_STREAM")
    return f.serialize()


def test_hpack_table_size_abuse_is_flagged():
    h2 = Http2Connection(conn(), start_seen=True)
    settings = SettingsFrame(0)
    settings.settings[SettingsFrame.HEADER_TABLE_SIZE] = 4096
    h2.feed_response(settings.serialize(), 1)
    # a dynamic table size update to 1 GiB, far above what the peer allowed
    bomb = HeadersFrame(1)
    bomb.data = b"\x3f" + b"\xe1\xff\xff\xff\x03" + hpack.Encoder().encode([(":method", "GET")])
    bomb.flags.add("END_HEADERS")
    bomb.flags.add("END_STREAM")
    h2.feed_request(CLIENT_PREFACE + bomb.serialize(), 2)
    (x,) = h2.finish()
    assert any("not decodable" in n for n in x.notes)
    assert x.request.headers_reliable is False


def test_continuation_flood_is_bounded():
    h2 = Http2Connection(conn(), start_seen=True)
    h2.feed_request(CLIENT_PREFACE, 1)
    start = HeadersFrame(1)
    start.data = b"\x82"
    h2.feed_request(start.serialize(), 2)
    frame = ContinuationFrame(1)
    frame.data = b"\x00" * 16000
    flood = frame.serialize()
    started = time.monotonic()
    for i in range(200):  # 3.2 MB of CONTINUATION, never END_HEADERS
        h2.feed_request(flood, 3 + i)
    assert time.monotonic() - started < 5
    (x,) = h2.finish()
    assert any("CONTINUATION flood" in n for n in x.notes)
    assert h2.dirs["request"].block is None  # nothing kept


def test_oversized_frame_stops_parsing_that_direction():
    h2 = Http2Connection(conn(), start_seen=True)
    header = (5 << 20).to_bytes(3, "big") + b"\x01\x04" + (1).to_bytes(4, "big")  # a 5 MiB HEADERS
    h2.feed_request(CLIENT_PREFACE + header + b"\x00" * 1000, 1)
    h2.finish()
    assert any("oversized frame" in n for n in h2.notes)
    assert len(h2.dirs["request"].buf) < 2000


def test_data_flows_and_secrets_never_reach_the_output():
    enc = hpack.Encoder()
    h2 = Http2Connection(conn(), start_seen=True)
    h2.feed_request(CLIENT_PREFACE + request_headers(enc, end_stream=False), 1)
    body = DataFrame(1)
    body.data = b'{"model": "m"}'
    body.flags.add("END_STREAM")
    h2.feed_request(body.serialize(), 2)
    (x,) = h2.finish()
    d = exchange_to_dict(x)
    assert d["method"] == "POST" and d["authority"] == "api.example.com"
    assert d["request"]["body"]["text"] == '{"model": "m"}'
    assert "sk-secret" not in str(d)
    assert ["authorization", "[redacted]"] in d["request"]["headers"]


def test_decompression_bombs_are_flagged_not_followed():
    zeros = b"\0" * (200 << 20)
    for encoding, packed in (("gzip", gzip.compress(zeros, 9)),
                             ("deflate", zlib.compress(zeros, 9)),
                             ("br", brotli.compress(zeros, quality=5)),
                             ("zstd", zstandard.ZstdCompressor(level=3).compress(zeros))):
        started = time.monotonic()
        out = decode_body(packed, encoding, max_decoded=16 << 20)
        assert out.error and out.error.startswith("bomb"), (encoding, out.error)
        assert out.data == packed  # the raw bytes are kept, not a partial decode
        assert time.monotonic() - started < 10


def test_broken_and_unknown_encodings():
    assert decode_body(b"not gzip", "gzip").error.startswith("gzip")
    assert decode_body(gzip.compress(b"hello")[:-6], "gzip").error  # cut off
    assert decode_body(b"x", "compress").error == "unsupported content-encoding compress"
    assert decode_body(gzip.compress(zlib.compress(b"two layers")), "deflate, gzip").data == b"two layers"
    assert decode_body(zlib.compress(b"raw")[2:-4], "deflate").data == b"raw"  # raw deflate accepted


def test_invalid_utf8_bodies_are_kept_as_base64():
    h1 = Http1Connection(conn())
    h1.feed_request(b"POST /x HTTP/1.1\r\nhost: a\r\ncontent-length: 4\r\n\r\n\xff\xfe\x00\x01", 1)
    h1.feed_response(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: 14\r\n\r\n"
                     b"data: \xff\xfe!\n\n", 2)
    (x,) = h1.finish(closed=True)
    d = exchange_to_dict(x)
    assert d["request"]["body"]["base64"] == "//4AAQ=="
    assert d["response"]["body"]["sse"] == [{"event": "message", "data": "\ufffd\ufffd!"}]


def test_sse_parser_any_split_and_line_endings():
    text = (b": comment\r\nevent: a\r\ndata: 1\r\ndata: 2\r\n\r\ndata: [DONE] inside\r\r"
            b"id: 7\ndata: x\n\ndata: tail")
    whole = SseParser()
    expected = whole.feed(text) + whole.finish()[0]
    for cut in range(1, len(text)):
        p = SseParser()
        events = p.feed(text[:cut]) + p.feed(text[cut:])
        tail, was_cut = p.finish()
        assert events + tail == expected, cut
        assert was_cut
    assert [(e.event, e.data, e.id) for e in expected] == [
        ("a", "1\n2", None), ("message", "[DONE] inside", None), ("message", "x", "7"),
        ("message", "tail", "7")]


def test_ndjson_split():
    lines, cut = split_ndjson(b'{"a":1}\n{"b":2}\n{"c"')
    assert lines == ['{"a":1}', '{"b":2}', '{"c"'] and cut


def test_http1_pipelining_head_1xx_and_early_response():
    h1 = Http1Connection(conn())
    h1.feed_request(b"HEAD /a HTTP/1.1\r\nhost: h\r\n\r\n"
                    b"POST /b HTTP/1.1\r\nhost: h\r\nexpect: 100-continue\r\ncontent-length: 5\r\n\r\n", 1)
    h1.feed_response(b"HTTP/1.1 200 OK\r\ncontent-length: 1234\r\n\r\n"  # HEAD: no body follows
                     b"HTTP/1.1 100 Continue\r\n\r\n", 2)
    h1.feed_request(b"hello", 3)
    h1.feed_response(b"HTTP/1.1 201 Created\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", 4)
    h1.feed_request(b"POST /c HTTP/1.1\r\nhost: h\r\ncontent-length: 10\r\n\r\n01234", 5)
    # the server answers before the request body is done
    h1.feed_response(b"HTTP/1.1 413 Too Large\r\ncontent-length: 0\r\nconnection: close\r\n\r\n", 6)
    h1.feed_request(b"56789", 7)
    xs = h1.finish(closed=True)
    assert [(x.method, x.path, x.status) for x in xs] == [("HEAD", "/a", 200), ("POST", "/b", 201),
                                                          ("POST", "/c", 413)]
    assert xs[1].informational == [100] and xs[1].response.body == b"abc" and xs[1].request.body == b"hello"
    assert xs[2].response.start_ns < xs[2].request.end_ns and xs[2].request.body == b"0123456789"
    assert all(x.complete for x in xs)


def test_http1_body_until_close_and_gap():
    h1 = Http1Connection(conn())
    h1.feed_request(b"GET /a HTTP/1.1\r\nhost: h\r\n\r\n", 1)
    h1.feed_response(b"HTTP/1.0 200 OK\r\n\r\nuntil the end", 2)
    (x,) = h1.finish(closed=True)
    assert x.response.body == b"until the end" and x.complete

    h1 = Http1Connection(conn())
    h1.feed_request(b"GET /a HTTP/1.1\r\nhost: h\r\n\r\n", 1)
    # 4 bytes, 50 lost, 22 more: the body its content-length announces (the gap is bridged)
    h1.feed_response(b"HTTP/1.1 200 OK\r\ncontent-length: 76\r\n\r\npart", 2)
    h1.gap("response", 50, "ringbuf_full")
    h1.feed_request(b"GET /b HTTP/1.1\r\nhost: h\r\n\r\n", 3)
    h1.feed_response(b"rest of the old body\r\nHTTP/1.1 204 No Content\r\n\r\n", 4)
    xs = h1.finish(closed=False)
    assert [(x.path, x.status, x.complete) for x in xs] == [("/a", 200, False), ("/b", 204, True)]
    assert "50 bytes missing in the response stream (ringbuf_full)" in xs[0].notes


def test_http2_padding_priority_trailers_reset_goaway():
    from hyperframe.frame import GoAwayFrame, PriorityFrame, RstStreamFrame

    enc_c, enc_s = hpack.Encoder(), hpack.Encoder()
    h2 = Http2Connection(conn(), start_seen=True)
    req = HeadersFrame(1)
    req.data = enc_c.encode([(":method", "POST"), (":path", "/p"), (":scheme", "https"), (":authority", "a")])
    req.flags.add("END_HEADERS")
    req.flags.add("PRIORITY")
    req.flags.add("PADDED")
    req.pad_length, req.depends_on, req.stream_weight = 7, 0, 200
    body = DataFrame(1)
    body.data = b"padded body"
    body.flags.add("PADDED")
    body.pad_length = 30
    trailers = HeadersFrame(1)
    trailers.data = enc_c.encode([("x-checksum", "abc")])
    trailers.flags.add("END_HEADERS")
    trailers.flags.add("END_STREAM")
    prio = PriorityFrame(3)
    prio.depends_on, prio.stream_weight = 1, 16
    h2.feed_request(CLIENT_PREFACE + req.serialize() + body.serialize() + prio.serialize()
                    + trailers.serialize(), 1)
    resp = HeadersFrame(1)
    resp.data = enc_s.encode([(":status", "200"), ("content-type", "text/plain")])
    resp.flags.add("END_HEADERS")
    data = DataFrame(1)
    data.data = b"ok"
    data.flags.add("END_STREAM")
    # a second stream, reset by the client; then the server goes away
    req2 = HeadersFrame(5)
    req2.data = enc_c.encode([(":method", "GET"), (":path", "/q"), (":scheme", "https"), (":authority", "a")])
    req2.flags.add("END_HEADERS")
    req2.flags.add("END_STREAM")
    rst = RstStreamFrame(5)
    rst.error_code = 8
    h2.feed_request(req2.serialize() + rst.serialize(), 2)
    away = GoAwayFrame(0)
    away.last_stream_id, away.error_code = 5, 0
    h2.feed_response(resp.serialize() + data.serialize() + away.serialize(), 3)
    xs = h2.finish()
    a, b = xs[0], xs[-1]
    assert (a.method, a.path, a.status) == ("POST", "/p", 200)
    assert bytes(a.request.body) == b"padded body" and a.request.trailers == [("x-checksum", "abc")]
    assert a.complete and bytes(a.response.body) == b"ok"
    assert b.stream_id == 5 and "stream reset by the client (CANCEL)" in b.notes and not b.complete
    assert any("GOAWAY from the server (NO_ERROR), last stream 5" in n for n in h2.notes)
