"""Every resource budget is an `analyzer:` key (Limits) that reaches the code enforcing it, in one-shot
and live mode alike (both build the tracker and the events in analyzer/pipeline.py)."""

from __future__ import annotations

import gzip
import json
import threading
from dataclasses import fields, replace

import hpack
import pytest
from hyperframe.frame import DataFrame, HeadersFrame

from analyzer.cli import _analyze
from analyzer.config import load
from analyzer.http.http1 import Http1Connection
from analyzer.http.http2 import CLIENT_PREFACE, Http2Connection
from analyzer.live.follow import Follower, FollowOptions
from analyzer.live.metrics import FollowStats
from analyzer.model import ConnectionInfo, Exchange, Limits
from analyzer.pipeline import Pipeline
from analyzer.sinks.exchanges_jsonl import ExchangesFile
from helpers.follow_helpers import make_parts

NEW_KEYS = ["max_json_bytes", "max_json_depth", "max_event_line_bytes", "max_decoded_body_bytes",
            "max_connection_body_bytes", "max_pipelined_requests"]


def _conn() -> ConnectionInfo:
    return ConnectionInfo("n", "1-1-1", 1, 1, "test", 0, 0, "/lib/libssl.so.3", seen_from_start=True)


def _cfg(tmp_path, **keys):
    p = tmp_path / "c.yaml"
    p.write_text("analyzer:\n" + "".join(f"  {k}: {v}\n" for k, v in keys.items()))
    return load(p)


def test_the_new_keys_are_limits_with_their_former_constants_as_defaults():
    from analyzer.ai.json_budget import MAX_JSON_BYTES, MAX_JSON_DEPTH
    from analyzer.http.bodies import DEFAULT_MAX_DECODED, MAX_LINE

    assert set(NEW_KEYS) <= {f.name for f in fields(Limits)}
    d = Limits()
    assert (d.max_json_bytes, d.max_json_depth, d.max_event_line_bytes, d.max_decoded_body_bytes) == \
        (MAX_JSON_BYTES, MAX_JSON_DEPTH, MAX_LINE, DEFAULT_MAX_DECODED)


@pytest.mark.parametrize("key", NEW_KEYS)
def test_each_key_is_accepted_and_reaches_the_pipeline(tmp_path, key):
    cfg = _cfg(tmp_path, **{key: 5})
    assert getattr(cfg.limits, key) == 5
    pipeline = Pipeline(cfg, export=False)
    assert pipeline.tracker.limits == cfg.limits == pipeline.event_opts.limits


def _limitations(lines: list[str]) -> list[str]:
    return [n for line in lines for n in json.loads(line)["confidence"].get("limitations", [])]


@pytest.mark.parametrize(("key", "value", "reason"), [("max_json_depth", 1, "json_too_deep"),
                                                      ("max_json_bytes", 16, "json_too_large")])
def test_json_budgets_flag_a_normal_request_body_in_both_modes(tmp_path, key, value, reason):
    seg = tmp_path / "segments"
    paths = make_parts(seg, {"sdk": 1})
    cfg = _cfg(tmp_path, **{key: value})
    assert _analyze(paths, None, tmp_path / "one-shot.jsonl", None, cfg) == 0
    assert f"request_body_not_parsed:{reason}" in _limitations(
        (tmp_path / "one-shot.jsonl").read_text().splitlines())
    assert _analyze(paths, None, tmp_path / "default.jsonl", None, load(None)) == 0
    defaults = _limitations((tmp_path / "default.jsonl").read_text().splitlines())
    assert not any("not_parsed" in n for n in defaults)

    live = tmp_path / "live.jsonl"
    follower = Follower(FollowOptions(seg, live), _cfg(tmp_path, **{key: value}), FollowStats())
    follower.start()
    assert follower.replay(threading.Event())
    for name in follower.pending():
        follower.process(name)
    follower.close()
    assert f"request_body_not_parsed:{reason}" in _limitations(live.read_text().splitlines())


def test_event_line_budget_cuts_sse_lines_in_exchanges_and_events(tmp_path):
    paths = make_parts(tmp_path / "segments", {"sdk": 1})
    cfg = _cfg(tmp_path, max_event_line_bytes=8)
    assert _analyze(paths, tmp_path / "x.jsonl", tmp_path / "e.jsonl", None, cfg) == 0
    records = [json.loads(line) for line in (tmp_path / "x.jsonl").read_text().splitlines()]
    streams = [r["response"]["body"] for r in records if "sse" in r["response"]["body"]]
    assert streams and all(b["sse_cut_off"] for b in streams)
    assert all(len(e["data"]) <= 8 for b in streams for e in b["sse"])
    assert any("is not JSON" in n for n in _limitations((tmp_path / "e.jsonl").read_text().splitlines()))


def test_decoded_body_budget_reaches_the_exchanges_file(tmp_path):
    x = Exchange(_conn(), "1.1", 1, method="POST", path="/p", status=200)
    x.response.headers = [("content-encoding", "gzip")]
    x.response.body = bytearray(gzip.compress(b"a" * 10_000))
    x.response.complete = True
    for limits, bomb in ((Limits(), False), (Limits(max_decoded_body_bytes=1000), True)):
        path = tmp_path / f"x{bomb}.jsonl"
        f = ExchangesFile(path, limits=limits)
        f.write_exchange(x)
        f.close()
        error = json.loads(path.read_text())["response"]["body"]["error"]
        assert (error or "").startswith("bomb:") is bomb


def _h2_stream(enc: hpack.Encoder, sid: int, body: bytes, end: bool) -> bytes:
    h = HeadersFrame(sid)
    h.data = enc.encode([(":method", "POST"), (":path", "/v1/x"), (":scheme", "https"),
                         (":authority", "api.example.com")])
    h.flags.add("END_HEADERS")
    d = DataFrame(sid)
    d.data = body
    if end:
        d.flags.add("END_STREAM")
    return h.serialize() + d.serialize()


def test_connection_body_budget_caps_the_second_open_http2_stream():
    info = _conn()
    h2 = Http2Connection(info, start_seen=True, limits=Limits(max_connection_body_bytes=150))
    enc = hpack.Encoder()
    h2.feed_request(CLIENT_PREFACE + _h2_stream(enc, 1, b"a" * 100, end=False), 1)
    h2.feed_request(_h2_stream(enc, 3, b"b" * 100, end=False), 2)
    assert h2.held_body_bytes == 150
    assert "max_connection_body_bytes" in info.limits_hit
    first, second = h2.streams[1], h2.streams[3]
    assert bytes(first.request.body) == b"a" * 100 and not first.request.capped
    assert bytes(second.request.body) == b"b" * 50 and second.request.capped
    assert "request body over the connection's body budget" in second.notes
    # a finished stream no longer counts: its share goes to the next one
    end = DataFrame(1)
    end.flags.add("END_STREAM")
    h2.feed_request(end.serialize(), 3)
    status = HeadersFrame(1)
    status.data = hpack.Encoder().encode([(":status", "200")])
    status.flags.add("END_HEADERS")
    status.flags.add("END_STREAM")
    h2.feed_response(status.serialize(), 4)
    assert first.complete and h2.held_body_bytes == 50
    h2.feed_request(_h2_stream(enc, 5, b"c" * 100, end=False), 5)
    assert h2.held_body_bytes == 150 and not h2.streams[5].request.capped
    xs = h2.finish()
    assert h2.held_body_bytes == 0 and [x.stream_id for x in xs] == [1, 3, 5]


def test_connection_body_budget_caps_http1_bodies():
    info = _conn()
    h1 = Http1Connection(info, limits=Limits(max_connection_body_bytes=40))
    h1.feed_request(b"POST /a HTTP/1.1\r\nhost: h\r\ncontent-length: 100\r\n\r\n" + b"x" * 100, 1)
    assert h1.held_body_bytes == 40 and "max_connection_body_bytes" in info.limits_hit
    h1.feed_response(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok", 2)
    (x,) = h1.take_finished()
    assert len(x.request.body) == 40 and x.request.capped and not x.request.complete
    assert x.response.body == b"" and x.response.capped  # the request held the whole budget
    assert h1.held_body_bytes == 0


def test_pipelined_requests_budget_bounds_the_http1_backlog():
    info = _conn()
    h1 = Http1Connection(info, limits=Limits(max_pipelined_requests=3))
    held = []
    for i in range(20):  # the server never answers
        h1.feed_request(f"GET /{i} HTTP/1.1\r\nhost: h\r\n\r\n".encode(), i + 1)
        held.append(len(h1._req_backlog) + len(h1._inflight))
    assert max(held) <= 3 + 2 and "max_pipelined_requests" in info.limits_hit
    out = h1.take_finished()
    assert out and all(not x.response.complete for x in out)
    assert all(any("captured writes waiting in the request stream" in n for n in x.notes) for x in out)
    # without the budget, every request waits behind the first
    unbounded = Http1Connection(_conn())
    for i in range(20):
        unbounded.feed_request(f"GET /{i} HTTP/1.1\r\nhost: h\r\n\r\n".encode(), i + 1)
    assert len(unbounded._req_backlog) >= 18 and not unbounded.take_finished()


def test_pipelined_requests_budget_bounds_responses_waiting_for_a_lost_request():
    info = replace(_conn(), seen_from_start=False)
    h1 = Http1Connection(info, resync=True, limits=Limits(max_pipelined_requests=3))
    for i in range(20):  # answers to requests the capture never saw
        h1.feed_response(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok", i + 1)
        assert len(h1._backlog) <= 3
    assert "max_pipelined_requests" in info.limits_hit
    # parsing goes on: a request seen now gets the next answer
    h1.feed_request(b"GET /later HTTP/1.1\r\nhost: h\r\n\r\n", 100)
    h1.feed_response(b"HTTP/1.1 204 No Content\r\n\r\n", 101)
    assert [(x.path, x.status) for x in h1.finish(closed=False)] == [("/later", 204)]
