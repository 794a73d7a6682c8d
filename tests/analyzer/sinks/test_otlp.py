"""OTLP export (`--otlp`, `export.otlp`): the GenAI mapping of OISP events, checked attribute by
attribute; spans, log records and metrics received by a local OTLP receiver (tests/helpers/otlp_receiver.py,
gRPC and HTTP/protobuf, on the official opentelemetry-proto messages) for the recorded fixtures; a
collector that dies mid-run, or never answers, costs the export and nothing else: the analysis ends,
the events file is byte-identical to the goldens, and what was dropped is counted and reported."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from analyzer.config import AnalyzerConfigError, load
from analyzer.sinks.otel_mapping import METRIC_KEYS, map_call, pair_events, trace_ids, ts_ns
from analyzer.sinks.otlp_settings import OtlpSettings
from conftest import BIN, GOLDEN_KEY_ARGS, HASH_KEY, REPO
from helpers.analyzer_inputs import FIXTURES
from helpers.follow_helpers import (
    assert_same_events,
    one_shot_lines,
    output_lines,
    processed,
    publish,
    start_follow,
)
from helpers.follow_helpers import wait_for as wait_until
from helpers.otlp_receiver import Receiver, count_items, read_recorded

SEGMENTS = [FIXTURES / "segments" / "sdk", FIXTURES / "segments" / "sdk_more"]
GOLDEN = b"".join((FIXTURES / "golden" / f"{n}.events.jsonl").read_bytes() for n in ("sdk", "sdk_more"))
EVENTS = [json.loads(line) for line in GOLDEN.decode().splitlines()]
CALLS = pair_events(EVENTS)
SUMMARY = re.compile(r"OTLP: (\d+) span\(s\), (\d+) log record\(s\) exported, (\d+) span\(s\), "
                     r"(\d+) log record\(s\) dropped(?: \((\d+) call\(s\) found the queue full\))?, "
                     r"(\d+) of (\d+) metric")
CONTENT_KEYS = {"gen_ai.input.messages", "gen_ai.output.messages", "gen_ai.system_instructions",
                "gen_ai.tool.definitions"}


# ---- decoding what the receiver got ----------------------------------------------------------------
def value(v):
    """An OTLP AnyValue as Python."""
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: value(kv.value) for kv in v.kvlist_value.values}
    return getattr(v, kind)


def attrs(kvs) -> dict:
    return {kv.key: value(kv.value) for kv in kvs}


def spans_of(requests) -> list[tuple[dict, object, object]]:
    """(resource attributes, scope, span) of every span received."""
    return [(attrs(rs.resource.attributes), ss.scope, s) for r in requests for rs in r.resource_spans
            for ss in rs.scope_spans for s in ss.spans]


def logs_of(requests) -> list[tuple[dict, object]]:
    return [(attrs(rl.resource.attributes), rec) for r in requests for rl in r.resource_logs
            for sl in rl.scope_logs for rec in sl.log_records]


def last_metrics(requests) -> dict:
    """name -> metric, from the last metrics export (cumulative: it holds the totals)."""
    last = requests[-1]
    return {m.name: m for rm in last.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}


def summary(stderr: str) -> tuple[int, ...]:
    m = SUMMARY.search(stderr)
    assert m, stderr
    return tuple(int(x or 0) for x in m.groups())


def analyze(tmp_path: Path, *extra: str, config: dict | None = None, timeout: float = 120):
    out = tmp_path / "events.jsonl"
    cmd = [str(BIN / "oisp-analyze"), *map(str, SEGMENTS), "--out", str(out), *extra]
    if config is not None:  # the goldens' hash key (conftest.HASH_KEY), with the test's settings
        config = {**config, "analyzer": {"hash_key_file": str(HASH_KEY), **config.get("analyzer", {})}}
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(config))
        cmd += ["--config", str(path)]
    else:
        cmd += GOLDEN_KEY_ARGS
    started = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    return out, proc.stderr, time.monotonic() - started


# ---- the mapping (pure) ----------------------------------------------------------------------------
def test_every_fixture_call_maps_to_a_named_client_span():
    names = [map_call(req, resp).span.name for req, resp in CALLS]
    assert names == [
        "chat gpt-4o-mini", "chat gpt-4o-mini", "embeddings text-embedding-3-small", "chat rate-limited",
        "chat claude-haiku-4-5", "chat claude-haiku-4-5", "generate_content gemini-2.5-flash",
        "generate_content gemini-2.5-flash", *["chat anthropic.claude-3-haiku-20240307-v1:0"] * 3,
        "chat gpt-5-mini", "chat gpt-5-mini", "text_completion gpt-3.5-turbo-instruct",
        "chat command-a-03-2025", "chat llama3.2"]
    providers = [map_call(req, resp).span.attributes["gen_ai.provider.name"] for req, resp in CALLS]
    assert providers == ["openai"] * 4 + ["anthropic"] * 2 + ["gcp.gemini"] * 2 + ["aws.bedrock"] * 3 + \
        ["openai"] * 3 + ["cohere", "ollama"]


def test_openai_chat_attributes_follow_the_convention():
    req, resp = CALLS[0]
    call = map_call(req, resp)
    a = call.span.attributes
    assert {k: v for k, v in a.items() if k.startswith(("gen_ai.", "server.", "error."))} == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.request.stream": False,
        "gen_ai.request.temperature": 0.5,
        "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
        "gen_ai.response.id": "chatcmpl-fake",
        "gen_ai.response.finish_reasons": ["stop"],
        "gen_ai.usage.input_tokens": 10,
        "gen_ai.usage.output_tokens": 16,
        "gen_ai.usage.cache_read.input_tokens": 0,
        "gen_ai.usage.reasoning.output_tokens": 0,
        "server.address": "api.openai.com",
        "server.port": 443,
    }
    assert a["http.response.status_code"] == 200 and a["network.peer.port"] == 443
    assert a["oisp.request.event_id"] == req["event_id"] and a["oisp.response.event_id"] == resp["event_id"]
    # the real request and response times, to the microsecond the events carry
    assert call.span.start_ns == ts_ns(req["ts"]) == 1796035633745205000
    assert call.span.end_ns == ts_ns(resp["ts"]) and call.span.end_ns - call.span.start_ns == 3_428_000
    assert (call.span.trace_id, call.span.span_id) == trace_ids(req["event_id"]) and call.span.error is None
    assert not CONTENT_KEYS & set(a)  # content is opt-in
    # who called: the process, its container and pod, as resource attributes
    r = call.span.resource
    assert r["process.pid"] == 21796 and r["process.executable.name"] == "python"
    assert r["container.id"].startswith("4be1d7c0") and r["container.runtime.name"] == "containerd"
    assert r["k8s.pod.uid"] == "3f6c1a2e-9b7d-4e58-a1c4-5d2e8f0b6a97" and r["k8s.node.name"] == "vm"
    assert r["service.name"] == "python" and r["host.name"] == "vm"


def test_failed_call_has_error_type_status_and_a_duration_with_it():
    req, resp = CALLS[3]
    assert resp["data"]["status_code"] == 429
    call = map_call(req, resp)
    assert call.span.attributes["error.type"] == "rate_limit_exceeded"
    assert call.span.error == "Rate limit reached for requests"
    assert [p.instrument for p in call.metrics] == ["operation_duration"]  # no tokens were reported
    assert call.metrics[0].attributes["error.type"] == "rate_limit_exceeded"
    assert [d.severity for d in call.logs] == ["INFO", "WARN"]
    for req, resp in CALLS[:3] + CALLS[4:]:
        assert "error.type" not in map_call(req, resp).span.attributes


def test_cache_tokens_ports_and_metrics():
    anthropic = map_call(*CALLS[4]).span.attributes
    assert anthropic["gen_ai.usage.input_tokens"] == 131  # cache reads included, as the convention says
    assert anthropic["gen_ai.usage.cache_read.input_tokens"] == 100
    ollama = map_call(*CALLS[-1]).span.attributes
    assert (ollama["server.address"], ollama["server.port"]) == ("localhost", 11434)
    stream = map_call(*CALLS[1]).span.attributes
    assert stream["gen_ai.request.stream"] is True and stream["gen_ai.response.time_to_first_chunk"] >= 0
    points = map_call(*CALLS[0]).metrics
    assert [(p.instrument, p.value, p.attributes.get("gen_ai.token.type")) for p in points] == [
        ("token_usage", 10, "input"), ("token_usage", 16, "output"), ("operation_duration", 0.003428, None)]
    assert set(points[0].attributes) == {*METRIC_KEYS, "gen_ai.token.type"}


def test_content_only_when_captured_and_never_a_redaction_marker():
    req, resp = CALLS[0]
    a = map_call(req, resp, capture_content=True).span.attributes
    assert json.loads(a["gen_ai.system_instructions"]) == [{"type": "text", "content": "You are a test."}]
    assert json.loads(a["gen_ai.input.messages"]) == [
        {"role": "user", "parts": [{"type": "text", "content": "What does the fake provider say?"}]}]
    answer = resp["data"]["choices"][0]["message"]["content"]
    assert json.loads(a["gen_ai.output.messages"]) == [
        {"role": "assistant", "finish_reason": "stop", "parts": [{"type": "text", "content": answer}]}]
    hashed_req = json.loads(json.dumps(req))
    for m in hashed_req["data"]["messages"]:
        m["content"] = {"$redacted": {"reason": "policy", "hash": "hmac-sha256:00"}}
    hashed = map_call(hashed_req, None, capture_content=True).span.attributes
    assert not CONTENT_KEYS & set(hashed)


def test_tool_calls_and_definitions_in_content():
    req, resp = json.loads(json.dumps(CALLS[0][0])), json.loads(json.dumps(CALLS[0][1]))
    req["data"]["tools"] = [{"name": "get_weather", "type": "function", "description": "Weather"}]
    req["data"]["messages"].append({"role": "tool", "content": "sunny", "tool_call_id": "call_1"})
    resp["data"]["tool_calls"] = [{"id": "call_2", "name": "get_weather", "type": "function",
                                   "arguments": "{\"city\": \"Paris\"}"}]
    a = map_call(req, resp, capture_content=True).span.attributes
    assert json.loads(a["gen_ai.tool.definitions"]) == [
        {"type": "function", "name": "get_weather", "description": "Weather"}]
    assert json.loads(a["gen_ai.input.messages"])[-1] == {
        "role": "tool", "parts": [{"type": "tool_call_response", "id": "call_1", "response": "sunny"}]}
    assert json.loads(a["gen_ai.output.messages"])[0]["parts"][-1] == {
        "type": "tool_call", "id": "call_2", "name": "get_weather", "arguments": {"city": "Paris"}}


def test_pod_identity_and_a_call_without_response():
    req = json.loads(json.dumps(CALLS[0][0]))
    req["host"]["k8s"].update(pod_name="chatbot-7d9f-x2x4z", namespace="shop")
    req["host"]["container"]["name"] = "chatbot"
    call = map_call(req, None)
    r = call.span.resource
    assert (r["k8s.pod.name"], r["k8s.namespace.name"], r["k8s.container.name"]) == (
        "chatbot-7d9f-x2x4z", "shop", "chatbot")
    assert r["service.name"] == "chatbot" and r["container.name"] == "chatbot"
    assert call.span.end_ns == call.span.start_ns and call.span.error is None
    assert call.span.attributes["oisp.confidence.completeness"] == "partial"
    assert call.metrics == [] and len(call.logs) == 1  # no duration without a response, no tokens
    with pytest.raises(ValueError):
        map_call(CALLS[0][1], None)


# ---- settings ------------------------------------------------------------------------------------
def write_config(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "config.yaml"
    p.write_text(text)
    return p


def test_export_otlp_block_and_its_older_name(tmp_path):
    cfg = load(write_config(tmp_path, "export:\n  otlp:\n    endpoint: otel-collector.monitoring:4317\n"
                                      "    insecure: true\n    timeout_seconds: 3\n"))
    o = cfg.otlp
    assert (o.endpoint, o.protocol, o.plaintext, o.timeout_seconds) == (
        "otel-collector.monitoring:4317", "grpc", True, 3.0)
    assert o.grpc_target() == "otel-collector.monitoring:4317"
    alias = load(write_config(tmp_path, "analyzer:\n  otlp:\n    endpoint: https://c.example/otlp\n"
                                        "    protocol: http/protobuf\n")).otlp
    assert alias.http_url("traces") == "https://c.example/otlp/v1/traces" and not alias.plaintext
    assert OtlpSettings(endpoint="c:4318", protocol="http/protobuf").http_url("logs") == "https://c:4318/v1/logs"
    assert OtlpSettings(endpoint="http://c:4317").plaintext


@pytest.mark.parametrize("text, message", [
    ("export: {otlp: {endpoint: 'c:4317'}}\nanalyzer: {otlp: {endpoint: 'c:4317'}}\n", "configured twice"),
    ("export: {kafka: {}}\n", "unknown key(s) in export: kafka"),
    ("export: {otlp: {endpoint: collector}}\n", "export.otlp.endpoint must be host:port"),
    ("export: {otlp: {endpoint: 'c:4317', timeout_seconds: 0}}\n", "timeout_seconds must be"),
    ("export: {otlp: {endpoint: 'c:4317', queue_size: 0}}\n", "queue_size must be"),
    ("export: {otlp: {endpoint: 'c:4317', signals: [spans]}}\n", "signals must be"),
    ("export: {otlp: {endpoint: 'c:4317', metric_names: {latency: x}}}\n", "metric_names may rename"),
    ("export: {otlp: {endpoint: 'c:4317', metric_names: {token_usage: 'a b'}}}\n", "metric_names may rename"),
    ("export: {otlp: {endpoint: 'c:4317', ca_file: /nonexistent.pem}}\n", "ca_file must be"),
    ("analyzer: {otlp: {endpoint: 'c:4317', compression: gzip}}\n", "unknown key(s) in analyzer.otlp"),
])
def test_bad_export_blocks_are_usage_errors(tmp_path, text, message):
    path = write_config(tmp_path, text)
    with pytest.raises(AnalyzerConfigError) as err:
        load(path)
    assert message in str(err.value)
    out = subprocess.run([str(BIN / "oisp-analyze"), str(SEGMENTS[0]), "--config", str(path)], cwd=REPO,
                         capture_output=True, text=True)
    assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize("args, message", [
    (["--otlp", "not an endpoint"], "--otlp.endpoint must be host:port"),
    (["--otlp-protocol", "grpc"], "--otlp-protocol needs --otlp ENDPOINT"),
])
def test_bad_flags_are_usage_errors(args, message):
    out = subprocess.run([str(BIN / "oisp-analyze"), str(SEGMENTS[0]), *args], capture_output=True, text=True)
    assert out.returncode == 2 and message in out.stderr


# ---- to a receiver -------------------------------------------------------------------------------
def expected_spans(capture_content: bool) -> dict[int, object]:
    return {c.span.span_id: c for c in (map_call(q, r, capture_content) for q, r in CALLS)}


def check_spans(received: list, capture_content: bool) -> None:
    want = expected_spans(capture_content)
    assert len(received) == len(want) == 16
    for resource, scope, span in received:
        call = want[int.from_bytes(span.span_id, "big")]
        assert span.name == call.span.name and span.kind == span.SPAN_KIND_CLIENT
        assert int.from_bytes(span.trace_id, "big") == call.span.trace_id
        assert (span.start_time_unix_nano, span.end_time_unix_nano) == (call.span.start_ns, call.span.end_ns)
        assert attrs(span.attributes) == call.span.attributes
        assert resource == call.span.resource
        assert (scope.name, scope.version) == ("oisp-ebpf-sensor", "0.1.0")
        assert span.status.code == (span.status.STATUS_CODE_ERROR if call.span.error else
                                    span.status.STATUS_CODE_UNSET)


def check_logs(received: list, events: list[dict]) -> None:
    assert len(received) == len(events)
    by_id = {e["event_id"]: e for e in events}
    spans = {r["event_id"]: trace_ids(r["event_id"]) for r, _ in pair_events(events)}
    for resource, rec in received:
        body = value(rec.body)
        event = by_id[body["event_id"]]
        assert body == event  # the full OISP event, as written to --out
        assert rec.event_name == f"oisp.{event['event_type']}"
        assert rec.time_unix_nano == ts_ns(event["ts"])
        related = event.get("related_events")
        request_id = related[0]["event_id"] if related else event["event_id"]
        assert (int.from_bytes(rec.trace_id, "big"), int.from_bytes(rec.span_id, "big")) == spans[request_id]
        assert attrs(rec.attributes)["oisp.event_type"] == event["event_type"]
        assert resource["process.pid"] == event["process"]["pid"]


def check_metrics(received: list, names=("gen_ai.client.token.usage", "gen_ai.client.operation.duration")):
    metrics = last_metrics(received)
    tokens, duration = metrics[names[0]], metrics[names[1]]
    assert (tokens.unit, duration.unit) == ("{token}", "s")
    by_type = {"input": 0, "output": 0}
    for p in tokens.histogram.data_points:
        a = attrs(p.attributes)
        assert set(a) == {*METRIC_KEYS, "gen_ai.token.type"}
        by_type[a["gen_ai.token.type"]] += p.sum
        assert list(p.explicit_bounds)[:3] == [1, 4, 16]
    usages = [r["data"].get("usage", {}) for _, r in CALLS]
    assert by_type == {"input": sum(u.get("prompt_tokens", 0) for u in usages),
                       "output": sum(u.get("completion_tokens", 0) for u in usages)}
    points = [(attrs(p.attributes), p) for p in duration.histogram.data_points]
    assert sum(p.count for _, p in points) == 16
    errors = [a for a, _ in points if "error.type" in a]
    assert [a["error.type"] for a in errors] == ["rate_limit_exceeded"]
    total = sum((ts_ns(r["ts"]) - ts_ns(q["ts"])) / 1e9 for q, r in CALLS)
    assert sum(p.sum for _, p in points) == pytest.approx(total)


def test_grpc_export_of_the_fixtures(tmp_path):
    with Receiver("grpc") as rx:
        out, stderr, _ = analyze(tmp_path, "--otlp", f"http://127.0.0.1:{rx.port}")
        assert out.read_bytes() == GOLDEN  # the events file does not change with export
        assert summary(stderr) == (16, 32, 0, 0, 0, 0, 1)
        check_spans(spans_of(rx.requests["traces"]), capture_content=True)  # --content full (default)
        check_logs(logs_of(rx.requests["logs"]), EVENTS)
        check_metrics(rx.requests["metrics"])
        resource = attrs(rx.requests["metrics"][-1].resource_metrics[0].resource.attributes)
        assert resource["service.name"] == "oisp-ebpf-sensor"


def test_http_export_from_the_config_block_without_content(tmp_path):
    with Receiver("http") as rx:
        config = {"export": {"otlp": {
            "endpoint": f"http://127.0.0.1:{rx.port}", "protocol": "http/protobuf",
            "headers": {"x-tenant": "audit"}, "batch_size": 5,
            "metric_names": {"token_usage": "oisp.tokens", "operation_duration": "oisp.duration"}}}}
        out, stderr, _ = analyze(tmp_path, "--content", "hash", config=config)
        events = [json.loads(line) for line in out.read_text().splitlines()]
        assert summary(stderr) == (16, 32, 0, 0, 0, 0, 1)
        batches = [count_items("traces", r) for r in rx.requests["traces"]]
        assert len(batches) >= 4 and max(batches) <= 5  # batches of 5 calls at most
        assert all(h.get("x-tenant") == "audit" for h in rx.headers)
        received = spans_of(rx.requests["traces"])
        check_spans(received, capture_content=False)
        assert not any(CONTENT_KEYS & set(attrs(s.attributes)) for _, _, s in received)
        check_logs(logs_of(rx.requests["logs"]), events)  # bodies as written: content as keyed hashes
        assert "$redacted" in json.dumps(value(logs_of(rx.requests["logs"])[0][1].body))
        check_metrics(rx.requests["metrics"], names=("oisp.tokens", "oisp.duration"))


def start_receiver_process(tmp_path: Path, protocol: str, *extra: str):
    record = tmp_path / "received"
    record.mkdir()
    receiver = REPO / "tests" / "helpers" / "otlp_receiver.py"
    proc = subprocess.Popen([sys.executable, str(receiver), protocol, str(record), *extra],
                            stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()  # the receiver's readiness signal
    assert line.startswith("listening "), line
    return proc, int(line.split()[1]), record


FAST = {"timeout_seconds": 1, "retries": 1, "retry_backoff_seconds": 0.1, "flush_timeout_seconds": 2}


def test_receiver_killed_mid_run(tmp_path):
    # it acknowledges the first request (the first batch of spans), then dies on the second (that
    # batch's log records), unanswered
    proc, port, record = start_receiver_process(tmp_path, "grpc", "--die-after", "1")
    try:
        config = {"export": {"otlp": {"endpoint": f"127.0.0.1:{port}", "insecure": True, "batch_size": 2,
                                      **FAST}}}
        out, stderr, elapsed = analyze(tmp_path, config=config)
        assert proc.wait(timeout=30) == 3  # it did die, mid-run
    finally:
        proc.kill()
    assert out.read_bytes() == GOLDEN
    got = [count_items("traces", r) for r in read_recorded(record, "traces")]
    assert len(got) == 1 and got[0] in (1, 2)  # the first batch: what was queued, 2 calls at most
    spans_ok, logs_ok, spans_dropped, logs_dropped, _, failed, tried = summary(stderr)
    assert (spans_ok, logs_ok, spans_dropped, logs_dropped) == (got[0], 0, 16 - got[0], 32)
    assert failed == tried == 1
    assert re.search(r"OTLP (traces|logs) export to 127.0.0.1:\d+ \(grpc, plaintext\) failed \(.+\)", stderr)
    assert elapsed < 60


def test_collector_that_never_answers_does_not_hold_up_the_analysis(tmp_path):
    import socket

    black_hole = socket.socket()  # accepts connections (the kernel does), never says a word
    black_hole.bind(("127.0.0.1", 0))
    black_hole.listen(64)
    try:
        port = black_hole.getsockname()[1]
        config = {"export": {"otlp": {"endpoint": f"http://127.0.0.1:{port}", "protocol": "http/protobuf",
                                      "queue_size": 4, "batch_size": 1, **FAST}}}
        out, stderr, elapsed = analyze(tmp_path, config=config)
    finally:
        black_hole.close()
    assert out.read_bytes() == GOLDEN
    spans_ok, logs_ok, spans_dropped, logs_dropped, queue_full, failed, tried = summary(stderr)
    assert (spans_ok, logs_ok, spans_dropped, logs_dropped) == (0, 0, 16, 32)
    assert queue_full > 0 and failed == tried == 1
    # the analysis did not wait for the collector: the end waits flush_timeout plus one timeout at most
    # for traces and logs, one more timeout for the metrics, plus the analysis itself
    assert elapsed < 2 + 1 + 1 + 1 + 30


def test_follow_mode_exports_as_it_writes_and_survives_the_collector(tmp_path):
    proc_rx, port, record = start_receiver_process(tmp_path, "grpc")
    seg, out, log = tmp_path / "segments", tmp_path / "out" / "events.jsonl", tmp_path / "analyzer.log"
    seg.mkdir()
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "analyzer": {"poll_interval_seconds": 0.05, "connection_idle_seconds": 0.2,
                     "hash_key_file": str(HASH_KEY)},
        "export": {"otlp": {"endpoint": f"127.0.0.1:{port}", "insecure": True, **FAST}}}))
    first, second = (next(d.glob("*.parquet")) for d in SEGMENTS)
    proc = start_follow(seg, out, log, "--config", str(config))
    try:
        publish(first, seg)

        def delivered():
            return sum(count_items("traces", r) for r in read_recorded(record, "traces")) == 6 and \
                sum(count_items("logs", r) for r in read_recorded(record, "logs")) == 12
        wait_until(delivered, what="the first segment's calls at the collector", proc=proc)
        proc_rx.send_signal(signal.SIGKILL)  # the collector goes away
        proc_rx.wait()
        publish(second, seg)
        wait_until(lambda: second.name in processed(out) and len(output_lines(out)) == 32,
                   what="the second segment's events", proc=proc)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        proc.kill()
        proc_rx.kill()
    truth_dir = tmp_path / "truth"
    truth_dir.mkdir()
    for f in (first, second):
        publish(f, truth_dir)
    assert_same_events(output_lines(out), one_shot_lines(truth_dir, tmp_path))
    text = log.read_text()
    assert "exporting AI calls over OTLP to 127.0.0.1" in text and "Traceback" not in text
    assert summary(text)[:4] == (6, 12, 10, 20)
    received = spans_of(read_recorded(record, "traces"))
    want = expected_spans(True)
    assert len(received) == 6
    for _, _, s in received:
        assert attrs(s.attributes) == want[int.from_bytes(s.span_id, "big")].span.attributes


# ---- the queue and the retries, with stand-in exporters --------------------------------------------
class FakeExporter:
    """Fails `failures` times, then succeeds; holds each export until `gate` is set."""

    def __init__(self, failures: int = 0):
        import threading

        from opentelemetry.sdk.trace.export import SpanExportResult

        self.result = SpanExportResult
        self.failures = failures
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.batches: list[int] = []

    def export(self, items):
        self.entered.set()
        assert self.gate.wait(30)
        if self.failures:
            self.failures -= 1
            return self.result.FAILURE
        self.batches.append(len(items))
        return self.result.SUCCESS

    def shutdown(self):
        pass


def exporter_with(spans: FakeExporter, logs: FakeExporter, **settings):
    from analyzer.sinks.otlp_export import OtlpExporter

    s = OtlpSettings(endpoint="127.0.0.1:1", signals=("traces", "logs"), retry_backoff_seconds=0.01,
                     **settings)
    return OtlpExporter(s, capture_content=False, exporters=(spans, logs, FakeExporter()))


def test_a_full_queue_drops_new_calls_without_waiting_and_counts_them():
    spans, logs = FakeExporter(), FakeExporter()
    spans.gate.clear()  # the collector hangs on the first export
    exp = exporter_with(spans, logs, queue_size=3, batch_size=10)
    req, resp = CALLS[0]
    exp.submit([req, resp])
    assert spans.entered.wait(30)  # the worker holds call 1 in an export that does not return
    started = time.monotonic()
    for _ in range(5):
        exp.submit([req, resp])
    assert time.monotonic() - started < 1  # never waited for the collector
    assert exp.stats.queue_full_drops == 2 and exp.stats.spans_dropped == 2 and exp.stats.logs_dropped == 4
    spans.gate.set()
    s = exp.close()
    assert spans.batches == [1, 3] and logs.batches == [2, 6]
    assert (s.spans_exported, s.spans_dropped, s.logs_exported, s.logs_dropped) == (4, 2, 8, 4)


@pytest.mark.parametrize("retries, exported", [(2, 1), (1, 0)])
def test_a_failed_batch_is_retried_then_dropped(retries, exported):
    spans, logs = FakeExporter(failures=2), FakeExporter()
    exp = exporter_with(spans, logs, retries=retries)
    exp.submit(list(CALLS[0]))
    s = exp.close()
    assert (s.spans_exported, s.spans_dropped) == (exported, 1 - exported)
    assert (s.logs_exported, s.logs_dropped) == (2, 0)  # the other signal goes on regardless


def test_live_mode_metrics_count_the_export():
    from analyzer.live.metrics import FollowMetrics, FollowStats
    from analyzer.sinks.otlp_export import ExportStats

    stats = FollowStats(otlp=ExportStats(spans_exported=5, spans_dropped=2, logs_exported=9, logs_dropped=4,
                                         metric_exports_failed=1))
    samples = {(s.name, tuple(s.labels.items())): s.value for family in FollowMetrics(stats).collect()
               for s in family.samples}
    assert samples[("oisp_analyzer_otlp_spans_total", (("outcome", "exported"),))] == 5
    assert samples[("oisp_analyzer_otlp_spans_total", (("outcome", "dropped"),))] == 2
    assert samples[("oisp_analyzer_otlp_logs_total", (("outcome", "dropped"),))] == 4
    assert samples[("oisp_analyzer_otlp_metric_exports_failed_total", ())] == 1
