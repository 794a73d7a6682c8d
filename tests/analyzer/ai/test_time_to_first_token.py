"""Time to first token is the capture time of the stream event that carried the first content, not of
the response's first byte: streams whose headers and content-free events come long before the first
token, fed through the real HTTP/1.1 and HTTP/2 parsers at chosen capture times."""

from __future__ import annotations

import json

import hpack
import pytest
from hyperframe.frame import DataFrame, HeadersFrame

from analyzer.ai.events import EventOptions
from analyzer.ai.exchange_events import exchange_events
from analyzer.ai.stream_times import item_time
from analyzer.http.http1 import Http1Connection
from analyzer.http.http2 import CLIENT_PREFACE, Http2Connection
from analyzer.model import ConnectionInfo, HttpMessage, Limits
from helpers.exchanges import REG

MS = 1_000_000
T0 = 1_700_000_000_000_000_000
OPENAI_BODY = json.dumps({"model": "gpt-4o", "stream": True,
                          "messages": [{"role": "user", "content": "hi"}]}).encode()


def conn() -> ConnectionInfo:
    return ConnectionInfo("node-1", "42-abc-7", 42, 42, "agent", 1000, 5, "/lib/libssl.so.3",
                          seen_from_start=True)


def sse(obj) -> bytes:
    return b"data: " + (obj if isinstance(obj, bytes) else json.dumps(obj).encode()) + b"\n\n"


def chunk(delta: dict, finish=None) -> dict:
    return {"id": "c1", "object": "chat.completion.chunk", "model": "gpt-4o",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


# (capture time in ms after the request, response bytes): headers at once, a role-only event (no
# content) at 40 ms, the first content event split over two pieces (complete at 350 ms), the rest
OPENAI_STREAM = [
    (5, b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"),
    (40, sse(chunk({"role": "assistant", "content": ""}))),
    (300, sse(chunk({"content": "Hel"}))[:20]),
    (350, sse(chunk({"content": "Hel"}))[20:]),
    (500, sse(chunk({"content": "lo"})) + sse(chunk({}, "stop")) + sse(b"[DONE]")),
]


def http1_events(pieces, path="/v1/chat/completions", host="api.openai.com", body=OPENAI_BODY):
    h1 = Http1Connection(conn())
    h1.feed_request(f"POST {path} HTTP/1.1\r\nhost: {host}\r\ncontent-length: {len(body)}\r\n\r\n".encode()
                    + body, T0)
    for ms, data in pieces:
        if data.startswith(b"HTTP/1.1"):
            h1.feed_response(data, T0 + ms * MS)
        else:  # each piece as one chunk of the chunked body
            h1.feed_response(f"{len(data):x}\r\n".encode() + data + b"\r\n", T0 + ms * MS)
    h1.feed_response(b"0\r\n\r\n", T0 + 600 * MS)
    [x] = h1.finish(closed=True)
    return x, exchange_events(x, REG, EventOptions())


def response_data(events) -> dict:
    return next(e for e in events if e["event_type"] == "ai.response")["data"]


def test_openai_stream_over_http1():
    x, events = http1_events(OPENAI_STREAM)
    data = response_data(events)
    assert "Hello" in json.dumps(data)  # the answer, whole
    assert x.response.start_ns == T0 + 5 * MS  # the first byte: what the time used to be
    assert data["time_to_first_token_ms"] == 350


def test_openai_stream_over_http2():
    enc, dec = hpack.Encoder(), hpack.Encoder()
    h2 = Http2Connection(conn(), start_seen=True)
    req = HeadersFrame(1)
    req.data = enc.encode([(":method", "POST"), (":path", "/v1/chat/completions"), (":scheme", "https"),
                           (":authority", "api.openai.com")])
    req.flags.add("END_HEADERS")
    body = DataFrame(1)
    body.data = OPENAI_BODY
    body.flags.add("END_STREAM")
    h2.feed_request(CLIENT_PREFACE + req.serialize() + body.serialize(), T0)
    head = HeadersFrame(1)
    head.data = dec.encode([(":status", "200"), ("content-type", "text/event-stream")])
    head.flags.add("END_HEADERS")
    wire = head.serialize()
    for ms, data in OPENAI_STREAM[1:]:
        frame = DataFrame(1)
        frame.data = data
        wire_piece = frame.serialize()
        h2.feed_response(wire + wire_piece, T0 + ms * MS)
        wire = b""
    end = DataFrame(1)
    end.flags.add("END_STREAM")
    h2.feed_response(end.serialize(), T0 + 600 * MS)
    [x] = h2.finish()
    assert response_data(exchange_events(x, REG, EventOptions()))["time_to_first_token_ms"] == 350


def test_ollama_ndjson_stream():
    lines = [json.dumps({"model": "llama3", "message": {"role": "assistant", "content": c},
                         "done": d}).encode() + b"\n" for c, d in (("", False), ("Hi", False), ("", True))]
    head = b"HTTP/1.1 200 OK\r\ncontent-type: application/x-ndjson\r\ntransfer-encoding: chunked\r\n\r\n"
    pieces = [(3, head),
              (30, lines[0]), (700, lines[1][:10]), (720, lines[1][10:]), (800, lines[2])]
    body = json.dumps({"model": "llama3", "messages": [{"role": "user", "content": "hi"}]}).encode()
    _, events = http1_events(pieces, "/api/chat", "ollama:11434", body)
    assert response_data(events)["time_to_first_token_ms"] == 720


def test_a_token_only_the_end_of_the_body_completes():
    """The first content event has no blank line after it: the end of the body completes it."""
    pieces = [OPENAI_STREAM[0], (40, sse(chunk({"role": "assistant"}))),
              (900, sse(chunk({"content": "x"}))[:-1])]
    _, events = http1_events(pieces)
    assert response_data(events)["time_to_first_token_ms"] == 900


@pytest.mark.parametrize("index, want", [(0, 10), (1, 10), (2, 30), (3, 40), (7, None)])
def test_item_time_counts_events_as_the_parser_does(index, want):
    msg = HttpMessage(headers=[("content-type", "text/event-stream")])
    msg.add_body(b"data: a\n\ndata: b\n\ndata: c", 10)  # two events and the start of a third
    msg.add_body(b"\n\n: comment\n\n", 30)  # the third, and a comment (no event)
    msg.add_body(b"data: d\n\n", 40)
    got = item_time(msg, Limits(), index)
    assert got == (want if want is not None else 40)  # past the last event: the body's end


def test_item_time_of_a_json_body_is_unknown():
    msg = HttpMessage(headers=[("content-type", "application/json")])
    msg.add_body(b'{"a": 1}', 10)
    assert item_time(msg, Limits(), 0) is None
