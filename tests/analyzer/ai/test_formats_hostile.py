"""Every API format parser is total: JSON of any shape in any field gives a parsed call (what could be
understood), never an exception, and events that validate against the OISP schema. Bodies over the
JSON budgets are not parsed and say so; an exchange whose events fail to build anyway still gives
its ai.request/ai.response pair, with low confidence and the exception's type."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analyzer.ai import exchange_events as ee
from analyzer.ai.calls import AiCall
from analyzer.ai.events import EventOptions
from analyzer.ai.exchange_events import PARSERS, analyze_exchange, exchange_events
from analyzer.ai.formats import openai_chat
from analyzer.ai.formats.json_shapes import as_int, as_number, as_strs, at, dicts_at, int_at, str_at
from analyzer.ai.json_budget import MAX_JSON_DEPTH, JsonRefused, loads_bounded
from analyzer.ai.schema import validation_errors
from analyzer.model import Limits
from helpers.exchanges import REG, exchange

FORMATS = sorted({m for _, m in PARSERS}, key=lambda m: m.__name__)
FORMATS_DIR = Path(openai_chat.__file__).parent
# every quoted name the parsers look for, so generated objects hit the fields they read
WORDS = sorted({w for f in FORMATS_DIR.glob("*.py")
                for w in re.findall(r'"([A-Za-z_:.\-\[\]]{1,40})"', f.read_text())})
PATHS = ["/v1/chat/completions", "/v1/responses", "/v1/completions", "/v2/chat", "/v1/embeddings",
         "/v1/messages", "/v1beta/models/g:generateContent", "/v1beta/models/g:streamGenerateContent",
         "/model/m/converse", "/model/m/converse-stream", "/model/m/invoke",
         "/model/m/invoke-with-response-stream", "/api/chat", "/api/generate"]
CTYPES = ["application/json", "text/event-stream", "application/x-ndjson"]
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = (st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
           | st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from(WORDS) | st.text(max_size=8)
           | st.sampled_from(["\ud800", "a\udfffb"]))  # lone surrogates: JSON may escape them
keys = st.sampled_from(WORDS) | st.text(max_size=5)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(keys, inner, max_size=6), max_leaves=40)
objects = st.dictionaries(keys, json_values, max_size=10)
events = st.lists(st.tuples(st.sampled_from(WORDS) | st.just(""),
                            json_values.map(json.dumps) | st.sampled_from(["[DONE]", "", "{"])), max_size=6)


def _assert_valid(evs: list[dict]) -> None:
    for ev in evs:
        assert validation_errors(ev) == [], (ev["event_type"], validation_errors(ev))
        json.dumps(ev, allow_nan=False)  # what the sinks write: no NaN, no objects json cannot encode


@pytest.mark.parametrize("module", FORMATS, ids=lambda m: m.__name__.rsplit(".", 1)[-1])
@SETTINGS
@given(request=objects, response=json_values, stream=events, path=st.sampled_from(PATHS))
def test_parsers_take_any_json(module, request, response, stream, path):
    call = AiCall()
    module.parse_request(request, call, path)
    # exchange_events hands parse_response objects only (and arrays to the formats that stream so)
    if isinstance(response, dict) or (isinstance(response, list) and getattr(module, "JSON_ARRAY_STREAM", 0)):
        module.parse_response(response, call)
    module.parse_stream(stream, AiCall())
    assert call.model_requested is None or isinstance(call.model_requested, str)
    assert all(isinstance(m.content, str | None) for m in call.messages)


@SETTINGS
@given(request=objects, response=json_values, stream=events, path=st.sampled_from(PATHS),
       ctype=st.sampled_from(CTYPES), mode=st.sampled_from(["full", "hash", "none"]))
def test_any_json_gives_schema_valid_events(request, response, stream, path, ctype, mode):
    if ctype == "application/json":
        body = json.dumps(response).encode()
    elif ctype == "text/event-stream":
        body = "".join(f"event: {name}\ndata: {data}\n\n" for name, data in stream).encode()
    else:
        body = "\n".join(data for _, data in stream).encode()
    x = exchange("api.openai.com", path, request, body, ctype)
    result = analyze_exchange(x, REG, EventOptions(content=mode))
    assert result.parse_error is None
    _assert_valid(result.events)


def _raw_exchange(path: str, request: bytes, response: bytes = b"{}", ctype="application/json"):
    x = exchange("api.openai.com", path, {}, response, ctype)
    x.request.body = bytearray(request)
    return x


def test_messages_of_the_wrong_type_on_any_host():
    # this body, POSTed to /v1/chat/completions on any host, used to end the run with a TypeError
    for host in ("api.openai.com", "llm.internal:8443"):
        x = exchange(host, "/v1/chat/completions", {"model": "x", "messages": 5}, b'{"choices": 3}')
        req, resp = exchange_events(x, REG, EventOptions())
        _assert_valid([req, resp])
        assert req["data"]["model"] == {"id": "x"} and req["data"]["messages_count"] == 0


def test_model_that_is_not_a_string():
    x = exchange("api.openai.com", "/v1/chat/completions",
                 {"model": 123, "messages": [{"role": "user", "content": "hi"}]},
                 b'{"model": ["m"], "usage": {"prompt_tokens": true, "completion_tokens": 2}}')
    req, resp = exchange_events(x, REG, EventOptions())
    _assert_valid([req, resp])
    assert req["data"]["model"] == {} and req["data"]["messages_count"] == 1
    assert resp["data"]["usage"] == {"completion_tokens": 2}


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 5_000, 200_000])
def test_deep_request_body_is_flagged_not_parsed(depth):
    body = b'{"model": "x", "messages": ' + b"[" * depth + b"]" * depth + b"}"
    req, resp = exchange_events(_raw_exchange("/v1/chat/completions", body), REG, EventOptions())
    _assert_valid([req, resp])
    assert "request_body_not_parsed:json_too_deep" in req["confidence"]["limitations"]


def test_deep_response_and_stream_event_are_flagged():
    deep = "[" * 10_000 + "]" * 10_000
    x = exchange("api.openai.com", "/v1/chat/completions", {"model": "x", "messages": []}, deep.encode())
    _, resp = exchange_events(x, REG, EventOptions())
    assert "response_body_not_parsed:json_too_deep" in resp["confidence"]["limitations"]
    sse = f'data: {deep}\n\ndata: {{"choices": [{{"delta": {{"content": "ok"}}}}]}}\n\ndata: [DONE]\n\n'
    x = exchange("api.openai.com", "/v1/chat/completions", {"model": "x", "messages": []}, sse.encode(),
                 "text/event-stream")
    _, resp = exchange_events(x, REG, EventOptions())
    _assert_valid([resp])
    assert "stream_event_not_parsed:json_too_deep" in resp["confidence"]["limitations"]
    assert resp["data"]["choices"][0]["message"]["content"] == "ok"


def test_body_over_the_size_budget_is_flagged():
    body = json.dumps({"model": "x", "messages": [{"role": "user", "content": "y" * 100}]}).encode()
    opts = EventOptions(limits=Limits(max_json_bytes=64))
    req, _ = exchange_events(_raw_exchange("/v1/chat/completions", body), REG, opts)
    assert "request_body_not_parsed:json_too_large" in req["confidence"]["limitations"]


def test_depth_budget_counts_structure_not_strings():
    at_budget = "[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH
    assert loads_bounded(at_budget) is not None
    assert loads_bounded(json.dumps({"s": "[" * 10_000})) == {"s": "[" * 10_000}
    assert loads_bounded(json.dumps({"s": '\\"[' * 500})) == {"s": '\\"[' * 500}
    with pytest.raises(JsonRefused, match="json_too_deep"):
        loads_bounded("[" + at_budget + "]")
    with pytest.raises(JsonRefused):
        loads_bounded(b"[" * 1_000_000)  # truncated and deep: refused before json.loads recurses
    with pytest.raises(ValueError):
        loads_bounded(b"{not json")


def test_exception_while_building_events_gives_a_low_confidence_pair(monkeypatch):
    def broken(body, call, path=""):
        raise KeyError("surprise")

    monkeypatch.setattr(openai_chat, "parse_request", broken)
    x = exchange("api.openai.com", "/v1/chat/completions", {"model": "gpt-4o", "messages": []}, b"{}",
                 status=200)
    result = analyze_exchange(x, REG, EventOptions())
    assert result.parse_error == "KeyError"
    req, resp = result.events
    _assert_valid([req, resp])
    for ev in (req, resp):
        assert ev["confidence"]["level"] == "low"
        assert "parse_error:KeyError" in ev["confidence"]["limitations"]
    assert req["data"]["model"] == {"id": "gpt-4o"} and resp["data"]["status_code"] == 200
    assert exchange_events(x, REG, EventOptions()) == result.events  # same events, the list as before


def test_no_events_when_even_the_fallback_fails(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("worse")

    monkeypatch.setattr(ee, "_events", broken)
    monkeypatch.setattr(ee, "build_events", broken)
    x = exchange("api.openai.com", "/v1/chat/completions", {"model": "m", "messages": []}, b"{}")
    result = analyze_exchange(x, REG, EventOptions())
    assert result.events == [] and result.parse_error == "RuntimeError"


def test_lone_surrogates_are_replaced():
    # "\ud800" is valid JSON text but no UTF-8 writer or hash can encode the string it gives
    x = exchange("api.openai.com", "/v1/chat/completions",
                 {"model": "m\ud800", "messages": [{"role": "system", "content": "a\udc00"}]}, b"{}")
    for mode in ("full", "hash"):
        result = analyze_exchange(x, REG, EventOptions(content=mode))
        assert result.parse_error is None
        json.dumps(result.events, ensure_ascii=False).encode()
    assert result.events[0]["data"]["model"]["id"] == "m\ufffd"


def test_string_stop_parameter_is_a_list_in_events():
    x = exchange("api.openai.com", "/v1/chat/completions",
                 {"model": "m", "messages": [], "stop": "\n", "temperature": True, "max_tokens": 2.5}, b"{}")
    req, _ = exchange_events(x, REG, EventOptions())
    _assert_valid([req])
    assert req["data"]["parameters"] == {"stop": ["\n"]}


def test_typed_accessors():
    doc = {"a": [{"b": 1}, 2, {"b": True}], "s": "x", "big": 2**70, "f": float("inf")}
    assert at(doc, "a", 0, "b") == 1 and at(doc, "a", 5) is None and at(doc, "s", "x") is None
    assert int_at(doc, "a", 0, "b") == 1 and int_at(doc, "a", 2, "b") is None and int_at(doc, "big") is None
    assert str_at(doc, "s") == "x" and str_at(doc, "a") is None
    assert dicts_at(doc, "a") == [{"b": 1}, {"b": True}] and dicts_at(doc, "s") == []
    assert as_number(doc["f"]) is None and as_number(1.5) == 1.5 and as_int(False) is None
    assert as_strs("x") == ["x"] and as_strs(["x", 1]) is None


def test_text_within_the_budgets_reads_as_its_bytes_do():
    """loads_bounded reads a str within both budgets without encoding it: at the edges of the size and
    depth budgets, with multi-byte characters and surrogate escapes, a str gives what its UTF-8 bytes
    give (the same value, or the same refusal)."""
    from analyzer.ai.json_budget import loads_bounded

    def outcome(data, max_bytes, max_depth):
        try:
            return loads_bounded(data, max_bytes, max_depth)
        except ValueError as exc:
            return type(exc).__name__, str(exc)

    texts = ['{"a": "\u00e9\u00e9"}', '{"a": "\U0001f600"}', '[[["x"]]]', '{"a": "\\ud800 \\ud83d\\ude00"}',
             '"\\uDBFF"', '[1, 2', "[]" * 3, '{"k": "' + "\u4e00" * 20 + '"}']
    checked = 0
    for t in texts:
        raw = t.encode("utf-8", "surrogatepass")
        for max_bytes in range(len(t) - 1, len(raw) + 2):
            for max_depth in range(0, 5):
                assert outcome(t, max_bytes, max_depth) == outcome(raw, max_bytes, max_depth), (t, max_bytes)
                checked += 1
    assert checked > 200


def test_the_scanner_reads_as_json_loads_does():
    """json_budget._loads calls json's C scanner directly on text without surrounding whitespace: on
    seeded near-JSON strings (whitespace, extra data, a BOM, NaN, big numbers, cut text) it gives
    json.loads's value, or raises its error with its message."""
    import json
    import random

    from analyzer.ai.json_budget import _loads

    def outcome(f, text):
        try:
            return "value", f(text)
        except ValueError as exc:
            return type(exc).__name__, str(exc)

    pieces = ['{"a": 1}', "[", "]", "{", "}", '"x"', ",", ":", " ", "\n", "\t", "\r", "\ufeff", "NaN",
              "-Infinity", "1e400", "12345678901234567890123", "true", "null", '"\\u00e9"', '"\\ud800"', "x",
              "\x0c", "0", "-", ".5", '"', "\\"]
    rng = random.Random(9)
    values = 0
    for _ in range(20_000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 6)))
        got = outcome(_loads, text)
        assert got == outcome(json.loads, text), text
        values += got[0] == "value"
    assert values > 1000


def test_bytes_read_by_orjson_give_json_loads_value():
    """Bodies (bytes) are read by orjson unless they hold a run of 19 digits: on seeded near-JSON bytes
    (integers at and past 64 bits, floats of every shape, NaN, a BOM, UTF-16, CESU-8 surrogates, bytes
    that are not UTF-8, cut text) _loads gives json.loads's value, types and signs included (compared by
    repr), or raises its error with its message."""
    import json
    import random
    import struct

    from analyzer.ai.json_budget import _loads

    def outcome(f, data):
        try:
            return "value", repr(f(data))
        except ValueError as exc:
            return type(exc).__name__, str(exc)

    pieces = [b'{"a": 1}', b"[", b"]", b"{", b"}", b'"x"', b",", b":", b" ", b"\n", b"\xef\xbb\xbf", b"NaN",
              b"-Infinity", b"1e400", b"-1e400", b"9223372036854775807", b"9223372036854775808",
              b"-9223372036854775808", b"-9223372036854775809", b"18446744073709551615",
              b"18446744073709551616", b"123456789012345678", b"-0", b"-0.0", b"1E5", b"true", b"null",
              b'"\\u00e9"', b'"\\ud800"', b'"\\ud83d\\ude00"', b'"\xed\xa0\x80"', b'"\xff"', b"\x00", b"x",
              '{"k": "é"}'.encode("utf-16"), b"0", b"-", b".5", b'"', b"\\"]
    rng = random.Random(19)
    values = floats = 0
    for _ in range(20_000):
        data = b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 6)))
        got = outcome(_loads, data)
        assert got == outcome(json.loads, data), data
        values += got[0] == "value"
    for _ in range(20_000):  # floats as json.dumps and other writers spell them
        f = struct.unpack("d", rng.randbytes(8))[0]
        for text in (repr(f), f"{f:.17g}", f"{f:.3e}", f"{f:.6f}"):
            data = f'{{"v": [{text}]}}'.encode()
            got = outcome(_loads, data)
            assert got == outcome(json.loads, data), data
            floats += got[0] == "value"
    assert values > 1000 and floats > 70_000


def test_bytes_within_64_bits_do_not_go_through_json(monkeypatch):
    """The orjson path is taken (json.loads is not called) for a body without a long run of digits, and
    not for one with a run of 19 (which may be an integer past 64 bits: json keeps it exact)."""
    import json

    from analyzer.ai import json_budget

    calls = []
    real = json.loads
    monkeypatch.setattr(json_budget.json, "loads", lambda data: calls.append(data) or real(data))
    assert json_budget._loads(b'{"n": 123456789012345678, "s": "x"}') == {"n": 123456789012345678, "s": "x"}
    assert calls == []
    big = 2**64 + 1
    assert json_budget._loads(b'{"n": %d}' % big) == {"n": big} and len(calls) == 1


def test_bodies_of_exchanges_no_provider_names_are_not_read(monkeypatch):
    """An exchange whose host and path name no provider, its headers captured, gives no events without its
    bodies being decoded or parsed; one whose headers were not captured (HTTP/2 joined mid-connection) still
    has its request body read, since an AI-shaped body alone can tell the call."""
    read = []
    real = ee._json
    monkeypatch.setattr(ee, "_json", lambda msg, limits: read.append(msg) or real(msg, limits))
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
    plain = exchange("example.com", "/upload", body, b'{"ok": true}')
    assert analyze_exchange(plain, REG, EventOptions()).events == [] and read == []
    unknown = exchange(None, None, body, b'{"ok": true}')
    unknown.request.headers_reliable = False
    events = analyze_exchange(unknown, REG, EventOptions()).events
    assert read and read[0] is unknown.request
    assert [e["event_type"] for e in events] == ["ai.request", "ai.response"]
