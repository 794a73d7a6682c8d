"""Gaps in HTTP/1 streams: one inside a body of known length is bridged (the exchange keeps its other
half, the message says it is incomplete); one the Content-Length cannot account for resynchronizes."""

from __future__ import annotations

from analyzer.http.http1 import Http1Connection
from analyzer.model import ConnectionInfo


def conn() -> ConnectionInfo:
    return ConnectionInfo("n", "1-1-1", 1, 1, "client", 0, 0, "/lib/libssl.so.3", seen_from_start=True)


BODY = b'{"model": "claude", "messages": [' + b"x" * 1000 + b"]}"
REQUEST = (b"POST /v1/messages HTTP/1.1\r\nHost: api.anthropic.com\r\nContent-Length: %d\r\n\r\n" % len(BODY)
           + BODY)
RESPONSE = b'HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n{"ok": true}'
NEXT = b"GET /v1/models HTTP/1.1\r\nHost: api.anthropic.com\r\n\r\n"
NEXT_RESPONSE = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"


def run(request_pieces, response_pieces) -> list:
    h = Http1Connection(conn())
    for i, piece in enumerate(request_pieces):
        if isinstance(piece, int):
            h.gap("request", piece, "over_capture_limit")
        else:
            h.feed_request(piece, i)
    for i, piece in enumerate(response_pieces):
        if isinstance(piece, int):
            h.gap("response", piece, "ringbuf_full")
        else:
            h.feed_response(piece, 100 + i)
    return h.finish(closed=True)


def test_gap_inside_a_sized_request_body_keeps_the_response():
    head = REQUEST[:REQUEST.index(b"\r\n\r\n") + 4]
    cut = len(head) + 300
    xs = run([REQUEST[:cut], 500, REQUEST[cut + 500:] + NEXT], [RESPONSE + NEXT_RESPONSE])
    assert [x.status for x in xs] == [200, 404]  # the next exchange on the connection parses too
    x = xs[0]
    assert not x.request.complete and x.response.complete
    assert bytes(x.request.body) == BODY[:300] + BODY[800:]  # the stand-in bytes never reach the body
    assert bytes(x.response.body) == b'{"ok": true}'
    assert x.notes == ["500 bytes missing in the request stream (over_capture_limit)"]
    assert xs[1].request.complete and xs[1].response.complete


def test_gap_inside_a_sized_response_body():
    xs = run([REQUEST], [RESPONSE[:-6], 3, RESPONSE[-3:]])
    assert len(xs) == 1 and xs[0].status == 200
    assert xs[0].request.complete and not xs[0].response.complete
    assert bytes(xs[0].response.body) == b'{"ok":' + b"ue}"  # " tr" was lost


def test_gap_longer_than_the_body_left_resynchronizes():
    head = REQUEST[:REQUEST.index(b"\r\n\r\n") + 4]
    h = Http1Connection(conn())
    h.feed_request(REQUEST[:len(head) + 100], 1)
    h.gap("request", len(BODY), "over_capture_limit")  # more than the body has left
    h.feed_response(RESPONSE, 2)
    h.feed_request(NEXT, 3)
    h.feed_response(NEXT_RESPONSE, 4)
    xs = h.finish(closed=True)
    # framing is lost: what was in flight is closed, and the next request is found again
    assert any("parsing resumed after" in n for x in xs for n in x.notes)
    assert xs[0].request.complete is False
    assert xs[-1].method == "GET" and xs[-1].status == 404


def test_gap_in_a_chunked_body_resynchronizes():
    chunked = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"5\r\nhello\r\n0\r\n\r\n")
    xs = run([chunked[:-12], 4, chunked[-8:]], [b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"])
    assert xs[0].request.complete is False
    assert any("bytes missing in the request stream" in n for n in xs[0].notes)
