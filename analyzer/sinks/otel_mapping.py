"""OISP events -> OpenTelemetry data, following the GenAI semantic conventions. Pure: no SDK, no I/O.

One AI call (an `ai.request` and, when a response was captured, its `ai.response`) becomes one CLIENT
span named `{gen_ai.operation.name} {gen_ai.request.model}` from the request's first byte to the
response's last, one log record per OISP event (the event itself as the body), and the values of the
two client histograms. docs/export.md is the table of what comes from where.

Ids are hashes of the request's event id, so the same capture always gives the same trace and span
ids: an export repeated after a restart is recognisable as the same span, and tests can compare.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from analyzer.ai.events import COLLECTOR, COLLECTOR_VERSION

AttrValue = str | bool | int | float | list[str] | list[int] | list[float]

SCOPE_NAME = COLLECTOR
SCOPE_VERSION = COLLECTOR_VERSION

# our provider ids (attrs.provider_id) -> gen_ai.provider.name well-known values; others pass as they are
_PROVIDERS = {"azure_openai": "azure.ai.openai", "google": "gcp.gemini", "google_vertex": "gcp.vertex_ai",
              "aws_bedrock": "aws.bedrock", "mistral": "mistral_ai", "xai": "x_ai"}
# OISP request_type -> gen_ai.operation.name
_OPERATIONS = {"chat": "chat", "completion": "text_completion", "embedding": "embeddings"}
# OISP request parameters -> gen_ai.request.* attributes
_PARAMETERS = {"temperature": "gen_ai.request.temperature", "top_p": "gen_ai.request.top_p",
               "max_tokens": "gen_ai.request.max_tokens",
               "frequency_penalty": "gen_ai.request.frequency_penalty",
               "presence_penalty": "gen_ai.request.presence_penalty"}
# OISP usage -> gen_ai.usage.* (input tokens include cached ones in both)
_USAGE = {"prompt_tokens": "gen_ai.usage.input_tokens", "completion_tokens": "gen_ai.usage.output_tokens",
          "cached_tokens": "gen_ai.usage.cache_read.input_tokens",
          "reasoning_tokens": "gen_ai.usage.reasoning.output_tokens"}
# the metrics' attributes: the convention's, and low-cardinality ones only
METRIC_KEYS = ("gen_ai.operation.name", "gen_ai.provider.name", "gen_ai.request.model",
               "gen_ai.response.model", "server.address", "server.port")
_EPOCH = datetime(1970, 1, 1)


@dataclass(frozen=True)
class SpanData:
    name: str
    trace_id: int
    span_id: int
    start_ns: int
    end_ns: int
    attributes: dict[str, AttrValue]
    resource: dict[str, AttrValue]  # the calling workload: process, container, pod, node
    error: str | None = None  # set: status ERROR with this description


@dataclass(frozen=True)
class LogData:
    timestamp_ns: int
    event_name: str
    body: dict  # the OISP event, as written to --out
    attributes: dict[str, AttrValue]
    resource: dict[str, AttrValue]
    trace_id: int
    span_id: int
    severity: str = "INFO"  # WARN for a failed call's response


@dataclass(frozen=True)
class MetricPoint:
    instrument: str  # "token_usage" or "operation_duration" (names are configurable: otlp_settings.py)
    value: float
    attributes: dict[str, AttrValue]


@dataclass(frozen=True)
class CallTelemetry:
    span: SpanData
    logs: list[LogData] = field(default_factory=list)
    metrics: list[MetricPoint] = field(default_factory=list)


def ts_ns(ts: str) -> int:
    """An OISP timestamp (RFC 3339, microseconds, UTC) as nanoseconds since the epoch, exactly."""
    dt = datetime.fromisoformat(ts.removesuffix("Z"))  # naive UTC; much faster than strptime
    return (dt - _EPOCH) // timedelta(microseconds=1) * 1000


def _hash_int(kind: str, event_id: str, nbytes: int) -> int:
    value = int.from_bytes(hashlib.sha256(f"{kind}|{event_id}".encode()).digest()[:nbytes], "big")
    return value or 1  # an all-zero id is invalid in OTLP


def trace_ids(request_event_id: str) -> tuple[int, int]:
    """(trace_id, span_id) of the call whose ai.request has this event id."""
    return _hash_int("trace", request_event_id, 16), _hash_int("span", request_event_id, 8)


def provider_name(event: dict) -> str:
    pid = event.get("attrs", {}).get("provider_id") or event["data"]["provider"]["name"]
    return _PROVIDERS.get(pid, pid)


def operation_name(request: dict) -> str:
    kind = request["data"].get("request_type", "chat")
    if kind == "chat" and request.get("attrs", {}).get("api_format") == "google":
        return "generate_content"  # the convention's name for Gemini's generateContent
    return _OPERATIONS.get(kind, kind)


def server_address_port(endpoint: str) -> tuple[str | None, int | None]:
    parts = urlsplit(endpoint)
    if not parts.hostname or parts.hostname == "unknown":
        return None, None
    return parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)


def error_type(response: dict) -> str | None:
    """The convention's error.type: the provider's error code, else its error type, else the HTTP status;
    None when the call did not fail (or whether it failed is unknown)."""
    data = response["data"]
    if data.get("success") is not False:
        return None
    err = data.get("error") or {}
    code = err.get("code")
    if code is not None and str(code) != "":
        return str(code)
    if err.get("type"):
        return str(err["type"])
    return str(data["status_code"]) if data.get("status_code") is not None else "_OTHER"


def _drop_none(d: dict) -> dict:
    return {k: v for k, v in d.items() if v is not None}


def workload_resource(event: dict) -> dict[str, AttrValue]:
    """Who made the call, as OTel resource attributes: the process, its container, pod and node."""
    p, h = event.get("process", {}), event.get("host", {})
    container, k8s = h.get("container") or {}, h.get("k8s") or {}
    return _drop_none({
        "service.name": container.get("name") or p.get("name") or "unknown_service",
        "host.name": h.get("hostname"),
        "os.type": h.get("os"),
        "process.pid": p.get("pid"),
        "process.parent_pid": p.get("ppid"),
        "process.executable.name": p.get("name"),
        "process.executable.path": p.get("exe"),
        "process.command_line": p.get("cmdline"),
        "process.creation.time": p.get("start_time"),
        "process.linux.cgroup": p.get("cgroup"),
        "process.user.id": event.get("attrs", {}).get("uid"),
        "container.id": container.get("id"),
        "container.name": container.get("name"),
        "container.runtime.name": container.get("runtime"),
        "k8s.pod.uid": k8s.get("pod_uid"),
        "k8s.pod.name": k8s.get("pod_name"),
        "k8s.namespace.name": k8s.get("namespace"),
        "k8s.node.name": k8s.get("node_name"),
        "k8s.container.name": container.get("name") if k8s else None,
        # the owning workload under its kind's convention name (k8s.deployment.name, k8s.cronjob.name...)
        **({f"k8s.{kind.lower()}.name": k8s["workload_name"]} if (kind := _workload_kind(k8s)) else {}),
        "k8s.serviceaccount.name": k8s.get("service_account"),
        "container.image.name": _image(container.get("image"))[0],
        "container.image.tag": _image(container.get("image"))[1],
        **{f"k8s.pod.label.{k}": v for k, v in sorted((k8s.get("labels") or {}).items())
           if isinstance(v, str)},
    })


_WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "CronJob", "Job", "ReplicaSet")


def _workload_kind(k8s: dict) -> str | None:
    """The workload's kind when the conventions name it (k8s.KIND.name) and its name is known."""
    kind = k8s.get("workload_kind")
    return kind if kind in _WORKLOAD_KINDS and isinstance(k8s.get("workload_name"), str) else None


def _image(image: object) -> tuple[str | None, str | None]:
    """An image reference's name and tag (registry.local:5000/app:1.2 -> registry.local:5000/app, 1.2)."""
    if not isinstance(image, str) or not image:
        return None, None
    name = image.split("@", 1)[0]
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        return name[:colon], name[colon + 1:] or None
    return name, None


def _stop_sequences(stop) -> list[str] | None:
    if stop is None:
        return None
    return [str(s) for s in stop] if isinstance(stop, list) else [str(stop)]


def _parsed(arguments: str):
    """Tool call arguments as the object they encode, when they are JSON (the convention's shape)."""
    try:
        return json.loads(arguments)
    except ValueError:
        return arguments


def _text(content) -> str | None:
    return content if isinstance(content, str) else None  # a redaction marker is not content


def content_attributes(request: dict, response: dict | None) -> dict[str, str]:
    """The convention's opt-in content attributes (JSON strings), from content as captured."""
    out: dict[str, str] = {}
    data = request["data"]
    system, inputs = [], []
    for m in data.get("messages") or []:
        text = _text(m.get("content"))
        if m.get("role") == "system":
            if text is not None:
                system.append({"type": "text", "content": text})
            continue
        if text is None:
            continue  # left out or redacted (content hash/none): nothing to show
        if m.get("role") == "tool":
            part = _drop_none({"type": "tool_call_response", "id": m.get("tool_call_id"), "response": text})
        else:
            part = {"type": "text", "content": text}
        inputs.append(_drop_none({"role": m.get("role"), "parts": [part], "name": m.get("name")}))
    if system:
        out["gen_ai.system_instructions"] = json.dumps(system, ensure_ascii=False)
    if inputs:
        out["gen_ai.input.messages"] = json.dumps(inputs, ensure_ascii=False)
    if data.get("tools"):
        out["gen_ai.tool.definitions"] = json.dumps(
            [_drop_none({"type": t.get("type", "function"), "name": t.get("name"),
                         "description": t.get("description")}) for t in data["tools"]], ensure_ascii=False)
    if response is None:
        return out
    rdata = response["data"]
    parts: list[dict] = []
    for choice in rdata.get("choices") or []:
        text = _text((choice.get("message") or {}).get("content"))
        if text is not None:
            parts.append({"type": "text", "content": text})
    for call in rdata.get("tool_calls") or []:
        arguments = call.get("arguments")
        parts.append(_drop_none({"type": "tool_call", "id": call.get("id"), "name": call.get("name"),
                                 "arguments": _parsed(arguments) if isinstance(arguments, str) else None}))
    if parts:
        message = {"role": "assistant", "parts": parts}
        if rdata.get("finish_reason"):
            message["finish_reason"] = rdata["finish_reason"]
        out["gen_ai.output.messages"] = json.dumps([message], ensure_ascii=False)
    return out


def span_attributes(request: dict, response: dict | None, capture_content: bool) -> dict[str, AttrValue]:
    data = request["data"]
    attrs = request.get("attrs", {})
    address, port = server_address_port(data["provider"]["endpoint"])
    out: dict[str, AttrValue] = _drop_none({
        "gen_ai.operation.name": operation_name(request),
        "gen_ai.provider.name": provider_name(request),
        "gen_ai.request.model": (data.get("model") or {}).get("id"),
        "gen_ai.request.stream": data.get("streaming"),
        "server.address": address,
        "server.port": port,
        "thread.id": request.get("process", {}).get("thread_id"),
        "network.protocol.name": "http",
        "network.protocol.version": {"1.1": "1.1", "2": "2"}.get(str(attrs.get("http_version"))),
        "oisp.request.event_id": request["event_id"],
        "oisp.request_id": data.get("request_id"),
        "oisp.confidence.level": request.get("confidence", {}).get("level"),
    })
    peer = attrs.get("peer_address")
    if peer and ":" in peer:
        host, _, peer_port = peer.rpartition(":")
        out["network.peer.address"] = host.strip("[]")
        if peer_port.isdigit():
            out["network.peer.port"] = int(peer_port)
    params = data.get("parameters") or {}
    for key, name in _PARAMETERS.items():
        if isinstance(params.get(key), (int, float)) and not isinstance(params.get(key), bool):
            out[name] = params[key]
    stop = _stop_sequences(params.get("stop"))
    if stop:
        out["gen_ai.request.stop_sequences"] = stop
    if response is not None:
        r = response["data"]
        usage = r.get("usage") or {}
        out.update(_drop_none({
            "gen_ai.response.model": (r.get("model") or {}).get("id"),
            "gen_ai.response.id": r.get("provider_request_id"),
            "gen_ai.response.finish_reasons": [r["finish_reason"]] if r.get("finish_reason") else None,
            "gen_ai.response.time_to_first_chunk": r["time_to_first_token_ms"] / 1000
            if data.get("streaming") and r.get("time_to_first_token_ms") is not None else None,
            "http.response.status_code": r.get("status_code"),
            "error.type": error_type(response),
            "oisp.response.event_id": response["event_id"],
            "oisp.usage.total_cost_usd": usage.get("total_cost_usd"),
            "oisp.confidence.completeness": response.get("confidence", {}).get("completeness"),
        }))
        for key, name in _USAGE.items():
            if usage.get(key) is not None:
                out[name] = usage[key]
    else:
        out["oisp.confidence.completeness"] = "partial"  # no response captured
    if capture_content:
        out.update(content_attributes(request, response))
    return out


def _log(event: dict, resource: dict, trace_id: int, span_id: int, base: dict) -> LogData:
    failed = event["event_type"] == "ai.response" and event["data"].get("success") is False
    return LogData(timestamp_ns=ts_ns(event["ts"]), event_name=f"oisp.{event['event_type']}", body=event,
                   attributes={**base, "oisp.event_id": event["event_id"],
                               "oisp.event_type": event["event_type"]},
                   resource=resource, trace_id=trace_id, span_id=span_id,
                   severity="WARN" if failed else "INFO")


def call_metrics(span: SpanData) -> list[MetricPoint]:
    """gen_ai.client.token.usage (input, output) and gen_ai.client.operation.duration of a call."""
    a = span.attributes
    base = {k: a[k] for k in METRIC_KEYS if k in a}
    points = []
    for attr, token_type in (("gen_ai.usage.input_tokens", "input"),
                             ("gen_ai.usage.output_tokens", "output")):
        if attr in a:
            points.append(MetricPoint("token_usage", a[attr], {**base, "gen_ai.token.type": token_type}))
    if "oisp.response.event_id" in a:  # a duration only where the response was seen
        attrs = {**base, **({"error.type": a["error.type"]} if "error.type" in a else {})}
        points.append(MetricPoint("operation_duration", (span.end_ns - span.start_ns) / 1e9, attrs))
    return points


def map_call(request: dict, response: dict | None, capture_content: bool = False) -> CallTelemetry:
    """The telemetry of one AI call. capture_content: put prompts and answers on the span (the
    convention's opt-in attributes); the caller sets it only when events carry content as captured."""
    if request.get("event_type") != "ai.request":
        raise ValueError(f"expected an ai.request event, not {request.get('event_type')!r}")
    trace_id, span_id = trace_ids(request["event_id"])
    resource = workload_resource(request)
    attrs = span_attributes(request, response, capture_content)
    start = ts_ns(request["ts"])
    end = max(start, ts_ns(response["ts"])) if response is not None else start
    model = attrs.get("gen_ai.request.model")
    name = f"{attrs['gen_ai.operation.name']} {model}" if model else str(attrs["gen_ai.operation.name"])
    error = None
    if response is not None and "error.type" in attrs:
        err = response["data"].get("error") or {}
        error = str(err.get("message") or attrs["error.type"])
    span = SpanData(name=name, trace_id=trace_id, span_id=span_id, start_ns=start, end_ns=end,
                    attributes=attrs, resource=resource, error=error)
    base = {k: attrs[k] for k in ("gen_ai.operation.name", "gen_ai.provider.name", "gen_ai.request.model")
            if k in attrs}
    logs = [_log(ev, resource, trace_id, span_id, base) for ev in (request, response) if ev is not None]
    return CallTelemetry(span=span, logs=logs, metrics=call_metrics(span))


def pair_events(events: list[dict]) -> list[tuple[dict, dict | None]]:
    """(ai.request, its ai.response or None) for events in any order, paired by data.request_id."""
    responses = {e["data"].get("request_id"): e for e in events if e.get("event_type") == "ai.response"}
    return [(e, responses.get(e["data"].get("request_id")))
            for e in events if e.get("event_type") == "ai.request"]
