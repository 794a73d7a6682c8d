"""AI events end to end on exchanges: provider, parsed call, OISP validity, pairing, determinism,
secrets and content modes."""

from __future__ import annotations

import json
import subprocess

from analyzer.ai.events import EventOptions
from analyzer.ai.exchange_events import exchange_events
from analyzer.ai.schema import validation_errors
from conftest import BIN, REPO
from helpers.exchanges import KEY, REG, exchange


def openai_stream() -> bytes:
    chunks = [{"id": "chatcmpl-9", "model": "gpt-4o-mini-2024-07-18",
               "choices": [{"index": 0, "delta": {"content": w}}]} for w in ("Hel", "lo", " [DONE] ", "!")]
    chunks.append({"id": "chatcmpl-9", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    chunks.append({"id": "chatcmpl-9", "choices": [],
                   "usage": {"prompt_tokens": 12, "completion_tokens": 4, "total_tokens": 16}})
    return b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"


CHAT = {"model": "gpt-4o-mini", "stream": True, "stream_options": {"include_usage": True},
        "messages": [{"role": "system", "content": "Secret system prompt"},
                     {"role": "user", "content": "Hi"}]}


def test_openai_stream_events_validate_and_pair():
    x = exchange("api.openai.com", "/v1/chat/completions", CHAT, openai_stream(), "text/event-stream")
    req, resp = exchange_events(x, REG, EventOptions())
    for ev in (req, resp):
        assert validation_errors(ev) == []
    assert resp["data"]["request_id"] == req["data"]["request_id"]
    assert resp["related_events"] == [{"event_id": req["event_id"], "relationship": "caused_by"}]
    assert req["data"]["provider"] == {"name": "openai", "endpoint": "https://api.openai.com/v1/chat/completions"}
    assert resp["data"]["choices"][0]["message"]["content"] == "Hello [DONE] !"
    assert resp["data"]["usage"]["total_tokens"] == 16 and resp["data"]["usage"]["total_cost_usd"] > 0
    assert resp["data"]["latency_ms"] == 1500 and resp["data"]["time_to_first_token_ms"] == 200
    assert resp["data"]["model"]["id"] == "gpt-4o-mini-2024-07-18" and resp["data"]["success"]
    assert req["confidence"]["level"] == "high" and req["confidence"]["completeness"] == "full"
    # deterministic: the same exchange gives the same events
    assert exchange_events(x, REG, EventOptions()) == [req, resp]


def test_secrets_never_reach_events_and_content_modes():
    x = exchange("api.openai.com", "/v1/chat/completions", CHAT, openai_stream(), "text/event-stream")
    for mode in ("full", "hash", "none"):
        events = exchange_events(x, REG, EventOptions(content=mode))
        text = json.dumps(events)
        assert KEY not in text and KEY[8:] not in text
        assert all(validation_errors(e) == [] for e in events)
        assert events[0]["data"]["auth"]["key_prefix"] == "sk-proj-"
        if mode != "full":
            assert "Secret system prompt" not in text and "Hello" not in text
    hashed = exchange_events(x, REG, EventOptions(content="hash"))[0]["data"]["messages"][0]["content"]
    assert hashed["$redacted"]["hash"].startswith("hmac-sha256:")


def test_anthropic_error_429():
    body = json.dumps({"type": "error",
                       "error": {"type": "rate_limit_error", "message": "Slow down"}}).encode()
    request = {"model": "claude-haiku-4-5", "max_tokens": 10, "messages": [{"role": "user", "content": "x"}]}
    x = exchange("api.anthropic.com", "/v1/messages", request, body, status=429, headers=[("x-api-key", KEY)])
    req, resp = exchange_events(x, REG, EventOptions())
    assert validation_errors(req) == [] and validation_errors(resp) == []
    assert resp["data"]["success"] is False and resp["data"]["status_code"] == 429
    assert resp["data"]["error"] == {"type": "rate_limit_error", "message": "Slow down"}
    assert KEY not in json.dumps([req, resp])


def test_non_ai_traffic_gives_no_events():
    x = exchange("example.com", "/index.html", {"a": 1}, b"<html>")
    assert exchange_events(x, REG, EventOptions()) == []
    x = exchange("intranet.example", "/v1/chat/completions", {"not": "a chat"}, b"{}")
    assert exchange_events(x, REG, EventOptions()) == []


def test_cli_events_from_the_samples_validate_and_repeat(tmp_path):
    outs = []
    for i in range(2):
        out = tmp_path / f"events{i}.jsonl"
        subprocess.run([str(BIN / "oisp-analyze"), "samples/segments", "--out", str(out)], cwd=REPO,
                       check=True, capture_output=True)
        outs.append(out.read_bytes())
    assert outs[0] == outs[1]
    events = [json.loads(line) for line in outs[0].splitlines()]
    # the samples are `make run`'s workload: 31 calls, each a request and its response
    assert len(events) == 62
    assert sorted(e["event_type"] for e in events) == ["ai.request"] * 31 + ["ai.response"] * 31
    assert all(validation_errors(e) == [] for e in events)
    by_how = {(e["attrs"]["provider_id"], e["attrs"]["provider_matched_by"], e["confidence"]["level"])
              for e in events}
    # known hosts by name; the self-hosted server only by its OpenAI-shaped path and body
    assert ("openai", "host", "high") in by_how and ("anthropic", "host", "high") in by_how
    assert ("openai_compatible", "path", "medium") in by_how


def test_event_times_equal_strftime_across_seconds_and_the_cache_bound(monkeypatch):
    import random
    from datetime import UTC, datetime

    from analyzer.ai import events
    from analyzer.bounded_dict import BoundedDict

    monkeypatch.setattr(events, "_seconds", BoundedDict(16))  # filled and cleared many times over
    rng = random.Random(5)
    base = 1_764_499_605_000_000_000
    # around half a microsecond (rounded half to even), the end of a second, before the epoch, far ahead
    edges = [base + k * 1000 + d for k in (0, 1, 2, 999_999, 10**6)
             for d in (-501, -500, -499, 499, 500, 501)]
    others = [-1, -(10**9) - 500, -base, 10**20 - 1, 2**63 - 1, *(rng.randint(0, 2**63) for _ in range(5000))]
    halves = [500, 1500, 2500, 3500]  # exactly half a microsecond as a double: 0, 2, 2, 4 (to even)
    for ns in [None, 0, 1, 999, 10**9 - 1, 2**62, *halves, *edges, *others,
               *(base + rng.randint(0, 60 * 10**9) for _ in range(5000))]:
        expected = datetime.fromtimestamp((ns or 0) / 1e9, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        assert events._ts(ns) == expected
        assert len(events._seconds) <= 16
