"""The HTTP/1.1 fast path (analyzer/http/http1_simple.py, used by http1.py) is only a shortcut: on
seeded connections of every message shape it accepts and refuses, cut and interleaved at random, with
gaps, live-mode takes and either end, Http1Connection hands out exactly what it hands out with the fast
path turned off (h11 alone)."""

from __future__ import annotations

import dataclasses
import random

import h11
import pytest

from analyzer.http import http1
from analyzer.http.http1 import Http1Connection
from analyzer.http.http1_simple import simple_request, simple_response
from analyzer.model import ConnectionInfo

BODY = b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}'
POST = b"POST /v1/chat/completions HTTP/1.1\r\nHost: api.openai.com\r\nContent-Length: %d\r\n\r\n%s"
REQUESTS = [
    POST % (len(BODY), BODY),
    b"GET /v1/models HTTP/1.1\r\nHost: api.openai.com\r\nAccept: */*\r\n\r\n",
    b"HEAD /v1/models HTTP/1.1\r\nHost: api.openai.com\r\n\r\n",
    b"POST /v1/x HTTP/1.1\r\nHost: h\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}",
    b"POST /v1/x HTTP/1.1\r\nHost: h\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\n{}",
    b"POST /v1/x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
    b"POST /v1/x HTTP/1.0\r\nHost: h\r\nContent-Length: 2\r\n\r\n{}",
    b"POST /v1/x HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n{}",
    b"POST /v1/x HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}",  # no Host
    b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nX-Long: one\r\n two\r\n\r\n",  # a folded line
    b"GET / HTTP/1.1\nHost: a\n\n",  # bare LF
    b"GET / HTTP/1.1\r\nHost: a\nX: y\r\n\r\n",  # one bare LF
    b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2, 2\r\n\r\n{}",
    b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n{}",
    b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\n{}",  # body continues later
    b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\n{}",  # a byte of the next message
    b"CONNECT api.openai.com:443 HTTP/1.1\r\nHost: api.openai.com:443\r\n\r\n",
    b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    b"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nBad Header: x\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nX: \x00\r\n\r\n",
    b"GARBAGE\x00\xff\r\n\r\n",
]
ANSWER = b'{"id": "chatcmpl-1", "choices": []}'
RESPONSES = [
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
    % (len(ANSWER), ANSWER),
    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200\r\nContent-Length: 2\r\n\r\n{}",  # no reason phrase
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
    b"HTTP/1.1 204 No Content\r\n\r\n",
    b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n",
    b"HTTP/1.1 304 Not Modified\r\nContent-Length: 2\r\n\r\n{}",  # h11 reads no body: "{}" comes next
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}",
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end",  # read until close
    b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n{}",
    b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}",
    b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n{}",  # body continues later
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n",
    b"not a status line\r\n\r\n",
]


def conn() -> ConnectionInfo:
    return ConnectionInfo("n", "1-1-1", 1, 1, "client", 0, 0, "/lib/libssl.so.3", seen_from_start=True)


def script(rng: random.Random) -> list[tuple]:
    """One connection's deliveries: each direction's writes in order (whole messages, cut, or joined
    to the next), interleaved at random, with the odd gap or live-mode take; then its end."""
    weights = [8] + [1] * (len(REQUESTS) - 1)  # mostly the common shape, so runs of it go fast
    n = rng.randint(1, 4)
    reqs = rng.choices(REQUESTS, weights, k=n)
    resps = rng.choices(RESPONSES, [8] + [1] * (len(RESPONSES) - 1), k=n)

    def writes(messages: list[bytes]) -> list[bytes | int]:
        out: list[bytes | int] = []
        for m in messages:
            roll = rng.random()
            if roll < 0.15 and len(m) > 2:  # cut
                cut = rng.randint(1, len(m) - 1)
                out += [m[:cut], m[cut:]]
            elif roll < 0.25 and out and isinstance(out[-1], bytes):  # joined to the one before
                out[-1] += m
            else:
                out.append(m)
            if rng.random() < 0.05:
                out.append(rng.randint(1, 40))  # a gap
        return out

    a = [("request", w) for w in writes(reqs)]
    b = [("response", w) for w in writes(resps)]
    steps = []
    while a or b:
        side = a if (a and (not b or rng.random() < 0.5)) else b
        steps.append(side.pop(0))
        if rng.random() < 0.1:
            steps.append(("take", None))
    steps.append(("finish", rng.random() < 0.7))
    return steps


def run(steps: list[tuple]) -> list:
    h = Http1Connection(conn())
    out = []
    for ts, (what, arg) in enumerate(steps, start=1):
        try:
            if what == "take":
                out.append([dataclasses.asdict(x) for x in h.take_finished()])
            elif what == "finish":
                out.append([dataclasses.asdict(x) for x in h.finish(closed=arg)])
            elif isinstance(arg, int):
                h.gap(what, arg, "missing")
            elif what == "request":
                h.feed_request(arg, ts)
            else:
                h.feed_response(arg, ts)
        except Exception as exc:  # noqa: BLE001 - the tracker's boundary: both ways must raise alike
            out.append(("raised", type(exc).__name__, [dataclasses.asdict(x) for x in h.salvage()]))
            break
    return [out, dataclasses.asdict(h.conn), h.sequence]


def test_the_fast_path_hands_out_what_h11_alone_does(monkeypatch):
    rng = random.Random(11)
    scripts = [script(rng) for _ in range(3000)]
    fast = [run(s) for s in scripts]
    monkeypatch.setattr(http1, "simple_request", lambda data: None)
    for s, expected in zip(scripts, fast, strict=True):
        assert run(s) == expected, s


def test_the_common_exchange_never_reaches_h11():
    h = Http1Connection(conn())
    for i in range(3):
        h.feed_request(REQUESTS[0], 10 * i + 1)
        h.feed_response(RESPONSES[0], 10 * i + 2)
    xs = h.finish(closed=True)
    assert [(x.sequence, x.status, bytes(x.request.body), bytes(x.response.body)) for x in xs] == \
        [(i, 200, BODY, ANSWER) for i in (1, 2, 3)]
    assert all(x.complete and x.request.trailers == [] for x in xs)
    # neither h11 parser read a byte, nor was told of a request
    assert h._req.their_state is h11.IDLE and h._resp.our_state is h11.IDLE
    assert h._req.trailing_data == (b"", False)


SIMPLE_REQUESTS = {0, 1, 2, 4, 7}  # the indexes in REQUESTS of those the fast path reads itself


@pytest.mark.parametrize("i", range(len(REQUESTS)))
def test_which_requests_the_fast_path_reads(i):
    assert (simple_request(REQUESTS[i]) is not None) == (i in SIMPLE_REQUESTS)


def test_what_the_fast_path_reads():
    m = simple_request(REQUESTS[0])
    assert (m.method, m.target, m.body) == (b"POST", b"/v1/chat/completions", BODY)
    assert m.headers == [(b"host", b"api.openai.com"), (b"content-length", b"%d" % len(BODY))]
    assert simple_request(REQUESTS[2]).method == b"HEAD"  # the request is simple; its answer is not
    assert simple_response(RESPONSES[0], "HEAD") is None
    r = simple_response(RESPONSES[0], "POST")
    assert (r.status, r.body) == (200, ANSWER)
    assert simple_response(RESPONSES[2], "GET").status == 200
    for data in RESPONSES[3:]:
        assert simple_response(data, "GET") is None, data


def test_a_request_in_flight_is_held_once():
    """While its answer is awaited, a fast request's body is the exchange's alone: the parser keeps its
    head and the body's length, not the write (a long prompt is not held twice per connection)."""
    body = b'{"messages": "' + b"x" * 100_000 + b'"}'
    h = Http1Connection(conn())
    h.feed_request(POST % (len(body), body), 1)
    x, head, length = h._fast[:3]
    assert bytes(x.request.body) == body and length == len(body)
    assert head.endswith(b"\r\n\r\n") and len(head) < 200
    h.feed_response(RESPONSES[3], 2)  # chunked: h11 reads it, after reading the request's stand-in bytes
    (done,) = h.finish(closed=True)
    assert done.complete and bytes(done.request.body) == body and bytes(done.response.body) == b"{}"
