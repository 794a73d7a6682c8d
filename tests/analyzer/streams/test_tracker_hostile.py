"""The tracker on rows no recorder writes and connections that try to cost too much: rows are dropped
and counted, buffers stay within Limits, and a parser that raises costs its own connection only.
Bounds are asserted by counters and bytes held, never by the clock."""

from __future__ import annotations

import random

import pytest

from analyzer.http.http1 import Http1Connection
from analyzer.model import Limits
from analyzer.streams.reassembly import Data, Gap, StreamAssembler
from analyzer.streams.tracker import ConnectionTracker
from helpers.hostile_inputs import batch_of, connection_rows

BASE = {"node": "n", "pid": 7, "tid": 7, "uid": 0, "comm": "t", "cgroup_id": 1, "conn_id": "7-1",
        "lib_path": "/lib/libssl.so.3"}
REQ = b"POST /v1/chat/completions HTTP/1.1\r\nHost: api.openai.com\r\nContent-Length: 2\r\n\r\n{}"
RESP = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"


def row(kind: str, ts: int = 1, **kw) -> dict:
    return {**BASE, "kind": kind, "ts_wall": ts, **kw}


def data(direction: str, offset: int, payload: bytes, ts: int = 2, **kw) -> dict:
    return row("data", ts, direction=direction, stream_offset=offset, length=len(payload), data=payload, **kw)


def run(tracker: ConnectionTracker, rows: list[dict]) -> list:
    return list(tracker.process([batch_of(rows)]))


@pytest.mark.parametrize("field", ["direction", "stream_offset", "data", "kind", "ts_wall"])
def test_null_fields_are_dropped_and_counted(field):
    bad = data("egress", 0, REQ)
    bad[field] = None
    t = ConnectionTracker()
    xs = run(t, [row("open"), bad, data("egress", 0, REQ), data("ingress", 0, RESP), row("close", 3)])
    assert t.rows_dropped == 1
    assert len(xs) == 1 and xs[0].complete


def test_unknown_kind_null_gap_length_and_huge_gap():
    t = ConnectionTracker()
    rows = [row("open"), row("weird"), row("gap", direction="egress", stream_offset=0, length=None),
            data("egress", 0, REQ), data("ingress", 0, RESP),
            row("gap", 3, direction="egress", stream_offset=len(REQ), length=2**30,
                gap_reason="ringbuf_full"),
            row("close", 4)]
    xs = run(t, rows)
    assert t.rows_dropped == 2
    assert len(xs) == 1 and xs[0].connection.missing_bytes == 2**30


def test_overlapping_and_duplicated_chunks():
    t = ConnectionTracker()
    rows = [row("open"), data("egress", 0, REQ[:30]), data("egress", 10, REQ[10:]), data("egress", 0, REQ),
            data("ingress", 0, RESP), data("ingress", 0, RESP), row("close", 3)]
    (x,) = run(t, rows)
    assert x.complete and bytes(x.request.body) == b"{}"


@pytest.mark.parametrize("seed", [3, 48, 53, 30, 52, 163, 37])
def test_fuzz_seeds_that_crashed_the_tracker(seed):
    t = ConnectionTracker()
    run(t, connection_rows(random.Random(seed)))
    assert t.parse_errors == 0


def test_bytes_before_detection_are_capped():
    limits = Limits(max_undetected_bytes=64 * 1024)
    t = ConnectionTracker(limits=limits)
    t.feed(batch_of([row("open")]))
    chunk = bytes(range(256)) * 64  # 16 KB of something that is not HTTP, the server silent
    held = []
    for i in range(100):
        t.feed(batch_of([data("egress", i * len(chunk), chunk, ts=2 + i)]))
        c = t.open[("n", "7-1")]
        held.append(sum(len(p.data) for _, p in c.early if isinstance(p, Data)))
    assert max(held) <= limits.max_undetected_bytes + len(chunk)
    c = t.open[("n", "7-1")]
    assert not c.undetected and c.info.protocol == "unknown"
    assert "max_undetected_bytes" in c.info.limits_hit


def test_upload_to_a_silent_server_is_decided_as_http1():
    limits = Limits(max_undetected_bytes=64 * 1024, max_body_bytes=100_000)
    t = ConnectionTracker(limits=limits)
    body = b"x" * 1_000_000
    req = b"POST /v1/files HTTP/1.1\r\nHost: api.openai.com\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    rows = [row("open")] + [data("egress", i, req[i:i + 16384], ts=2 + i) for i in range(0, len(req), 16384)]
    rows += [data("ingress", 0, RESP, ts=10**9), row("close", 10**9 + 1)]
    (x,) = run(t, rows)
    assert x.connection.protocol == "http/1.1" and x.status == 200
    assert len(x.request.body) == 100_000 and x.request.capped


def test_bytes_beyond_a_hole_are_capped():
    s = StreamAssembler(max_pending=100_000)
    out = []
    for i in range(1, 200):  # offset 0..999 never comes
        out += s.push(Data(i * 1000, b"y" * 1000, i))
        assert s.pending_bytes <= 100_000 + 1000 + 64
    assert isinstance(out[0], Gap) and out[0].length == 1000
    assert sum(len(p.data) for p in out if isinstance(p, Data)) > 0


def test_a_parser_that_raises_costs_its_connection_only(monkeypatch):
    original = Http1Connection.feed_response

    def boom(self, data, ts):
        if self.conn.conn_id == "7-bad":
            raise ValueError("parser bug")
        return original(self, data, ts)

    monkeypatch.setattr(Http1Connection, "feed_response", boom)
    t = ConnectionTracker()
    rows = []
    for conn_id in ("7-ok", "7-bad"):
        b = {"conn_id": conn_id}
        rows += [row("open", **b), data("egress", 0, REQ + REQ, **b), data("ingress", 0, RESP, ts=3, **b),
                 row("close", 4, **b)]
    xs = run(t, rows)
    assert t.parse_errors == 1
    ok = [x for x in xs if x.connection.conn_id == "7-ok"]
    bad = [x for x in xs if x.connection.conn_id == "7-bad"]
    assert len(ok) == 2 and ok[0].complete and ok[0].connection.parse_error is None
    assert len(bad) == 1 and bad[0].connection.parse_error == "ValueError"  # its request, as it stood
    assert any("parse error (ValueError)" in n for n in bad[0].notes)


def test_a_parser_that_raises_at_the_end(monkeypatch):
    def boom(self, closed):
        raise RuntimeError("finish bug")

    monkeypatch.setattr(Http1Connection, "finish", boom)
    t = ConnectionTracker()
    xs = run(t, [row("open"), data("egress", 0, REQ), data("ingress", 0, RESP), row("close", 3)])
    assert t.parse_errors == 1 and len(xs) == 1 and xs[0].connection.parse_error == "RuntimeError"
