"""OISP v0.1 ai.request / ai.response events from an exchange and what its AI call said.

Deterministic: event ids are hashes of (node, connection, exchange, event type), timestamps come
from the capture, keys are sorted when written. The response names its request by the exchange
itself (same connection, same HTTP/2 stream or HTTP/1 position), never by time or thread.

Secrets never reach an event: API keys appear only as a short keyed hash (HMAC-SHA256) and an
8-character prefix, `key=` query parameters are stripped from endpoints, and with content "hash"
or "none" prompts and answers are replaced by the spec's redaction marker.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime

from analyzer.ai.calls import AiCall
from analyzer.ai.context import connection_attrs, host_context, process_context
from analyzer.ai.formats.json_shapes import as_int, as_number, as_strs
from analyzer.ai.pricing import PriceTable, bundle_table, call_cost
from analyzer.ai.providers import ProviderMatch
from analyzer.bounded_dict import BoundedDict
from analyzer.http.redaction import redact_path
from analyzer.model import Exchange, Limits

OISP_VERSION = "0.1"
COLLECTOR = "oisp-ebpf-sensor"
COLLECTOR_VERSION = "0.1.0"
CONTENT_MODES = ("full", "hash", "none")
# the request parameters the schema defines, each read as the schema's type (others are left out)
PARAMETERS = {"temperature": as_number, "top_p": as_number, "max_tokens": as_int,
              "frequency_penalty": as_number, "presence_penalty": as_number, "stop": as_strs}
_KEY_HEADERS = ("authorization", "x-api-key", "api-key", "x-goog-api-key")
# No public default: without a key (the command line always passes one, config.py's hash_key_file or
# the installation's generated key), hashes are keyed by a secret of this process only.
_PROCESS_KEY = secrets.token_bytes(32)


@dataclass(frozen=True)
class EventOptions:
    content: str = "full"  # full | hash | none
    hash_key: bytes = _PROCESS_KEY  # a secret per installation: hashes then cannot be guessed
    # the budgets bodies are read under (max_json_*, max_event_line_bytes, max_decoded_body_bytes)
    limits: Limits = field(default_factory=Limits)
    # what calls cost: the bundle's prices, under the config's prices_file (analyzer/ai/pricing.py)
    prices: PriceTable = field(default_factory=bundle_table)


# the text of each second up to its fraction, kept: strftime was most of _ts (3.5 us, 0.6 us so); events of
# a run fall in few seconds. Up to 4096 seconds kept (analyzer/bounded_dict.py).
_seconds: BoundedDict = BoundedDict(4096)


def _ts(ns: int | None) -> str:
    """ns since the epoch as RFC 3339 UTC with microseconds: datetime.fromtimestamp(ns / 1e9, UTC) written
    with strftime's "%Y-%m-%dT%H:%M:%S.%fZ". Its seconds and microseconds are split off the same float as
    datetime does (modf, then the fraction's microseconds rounded half to even), without making a datetime."""
    t = (ns or 0) / 1e9
    if not 0 <= t < 1e11:  # before the epoch or far ahead: as datetime gives it (or raises)
        return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    fraction, whole = math.modf(t)
    micro = round(fraction * 1e6)
    second = int(whole)
    if micro >= 1_000_000:
        micro -= 1_000_000
        second += 1
    head = _seconds.get(second)
    if head is None:
        head = _seconds.keep(second, datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S."))
    return f"{head}{micro:06d}Z"


def _id(*parts: object) -> str:
    return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:26]


def keyed_hash(opts: EventOptions, value: str) -> str:
    return "hmac-sha256:" + hmac.new(opts.hash_key, value.encode(), hashlib.sha256).hexdigest()[:16]


def _content(opts: EventOptions, text: str | None):
    if text is None:
        return None
    if opts.content == "full":
        return text
    marker = {"reason": "policy", "original_length": len(text),
              "redaction_profile": f"content={opts.content}"}
    if opts.content == "hash":
        marker["hash"] = keyed_hash(opts, text)
    return {"$redacted": marker}


def _auth(x: Exchange, opts: EventOptions) -> dict:
    for name in _KEY_HEADERS:
        value = x.request.header(name)
        if value:
            key = value.split(" ", 1)[1] if value.lower().startswith("bearer ") else value
            return {"type": "api_key", "key_prefix": key[:8] if len(key) > 16 else "",
                    "key_hash": keyed_hash(opts, key)}
    return {"type": "none" if x.request.headers_reliable else "unknown"}


def _envelope(x: Exchange, event_type: str, ts_ns: int | None, match: ProviderMatch, call: AiCall) -> dict:
    c = x.connection
    reasons = ["tls_boundary_capture"]
    missing, limitations = [], []
    if not x.request.complete:
        missing.append("request_body")
    if not x.response.complete and call.stream_complete:
        # every event of the stream arrived; only the HTTP framing after its end marker (the last
        # chunk, END_STREAM) was never read by the application, so the capture could not see it
        limitations.append("stream_end_marker_seen_http_framing_end_not_read")
    elif not x.response.complete:
        missing.append("response_body")
    if not (x.request.headers_reliable and x.response.headers_reliable):
        missing.append("headers")
        limitations.append("hpack_state_unknown_capture_began_mid_connection")
    limitations += [g.note for g in x.gaps][:5]
    limitations += call.notes[:5]
    level = "high" if match.confidence >= 0.95 else "medium" if match.confidence >= 0.5 else "low"
    if c.parse_error is not None:  # the connection's parser raised: what it held was salvaged
        limitations.append(f"connection_parse_error:{c.parse_error}")
        level = "low"
    confidence = {
        "level": level,
        "completeness": "full" if not missing else "partial",
        "reasons": reasons,
        "process_attribution": "direct",
        "content_source": "tls_boundary",
        "ai_detection_method": "known_endpoint" if match.matched_by in ("host", "pattern", "user")
        else "payload_inspection",
    }
    if missing:
        confidence["missing"] = missing
    if limitations:
        confidence["limitations"] = limitations
    return {
        "oisp_version": OISP_VERSION,
        "event_id": _id(c.node, c.conn_id, x.stream_id, x.sequence, event_type),
        "event_type": event_type,
        "ts": _ts(ts_ns),
        "host": host_context(c),
        "process": process_context(c),
        "source": dict(_PLAINTEXT_SOURCE if c.tls_stack == "plaintext" else _TLS_SOURCE),
        "confidence": confidence,
        "attrs": {"provider_id": match.provider, "api_format": match.api_format,
                  "provider_matched_by": match.matched_by, "connection_id": c.conn_id,
                  "http_version": x.http_version, "stream_id": x.stream_id, "tls_library": c.lib_path,
                  "process_role": c.role, "uid": c.uid, "cgroup_id": c.cgroup_id, **connection_attrs(c)},
    }


def _other_envelope(envelope: dict, x: Exchange, event_type: str, ts_ns: int | None) -> dict:
    """The envelope of the exchange's other event: the same but for its id, type and time. Its confidence
    and attrs are its own dicts (the fallback lowers confidence event by event, the response adds to its
    attrs); host, process and source are shared, as nothing changes them once built (the redaction copies)."""
    c = x.connection
    out = dict(envelope)
    out["event_id"] = _id(c.node, c.conn_id, x.stream_id, x.sequence, event_type)
    out["event_type"] = event_type
    out["ts"] = _ts(ts_ns)
    out["confidence"] = dict(envelope["confidence"])
    out["attrs"] = dict(envelope["attrs"])
    return out


# the envelope's `source`, by how the bytes were captured (copied into each event: its dicts are its own)
_TLS_SOURCE = {"collector": COLLECTOR, "collector_version": COLLECTOR_VERSION,
               "capture_method": "ebpf_uprobe", "capture_point": "ssl_read_write"}
_PLAINTEXT_SOURCE = {"collector": COLLECTOR, "collector_version": COLLECTOR_VERSION,
                     "capture_method": "ebpf_tracepoint", "capture_point": "socket_read_write"}


def _endpoint(x: Exchange) -> str:
    scheme = "http" if x.connection.tls_stack == "plaintext" else "https"
    return f"{scheme}://{x.authority or 'unknown'}{redact_path(x.path) or ''}"


def _drop_none(d: dict) -> dict:
    return {k: v for k, v in d.items() if v is not None}


def build_events(x: Exchange, match: ProviderMatch, call: AiCall, opts: EventOptions) -> list[dict]:
    """ai.request and (when any response was captured) ai.response, in that order."""
    c = x.connection
    request_id = "req_" + _id(c.node, c.conn_id, x.stream_id, x.sequence)
    provider = {"name": match.oisp_name, "endpoint": _endpoint(x)}
    req = _envelope(x, "ai.request", x.request.start_ns, match, call)
    req["data"] = _request_data(x, call, opts, request_id, provider)
    events = [req]
    if x.status is None and not x.response.body:
        return events
    resp = _other_envelope(req, x, "ai.response", x.response.end_ns or x.response.start_ns)
    resp["related_events"] = [{"event_id": req["event_id"], "relationship": "caused_by"}]
    resp["data"] = _response_data(x, match, call, opts, request_id, provider)
    # first token: the capture time of the stream event that carried it; a JSON-array stream (Gemini
    # without SSE) is not split by time, and its response's first byte stands in
    first = call.first_token_ns or x.response.start_ns
    if call.first_token_index is not None and first and x.request.start_ns:
        resp["data"]["time_to_first_token_ms"] = max(0, (first - x.request.start_ns) // 1_000_000)
    if call.output_text is not None:
        resp["attrs"]["output_text_length"] = len(call.output_text)
    events.append(resp)
    return events


def _request_data(x: Exchange, call: AiCall, opts: EventOptions, request_id: str, provider: dict) -> dict:
    messages = [_drop_none({"role": m.role if m.role in ("system", "user", "assistant", "tool", "function")
                            else "user", "content": _content(opts, m.content),
                            "content_length": None if m.content is None else len(m.content),
                            "has_images": bool(m.image_count) or None, "image_count": m.image_count or None,
                            "tool_call_id": m.tool_call_id, "name": m.name})
                for m in call.messages]
    return _drop_none({
        "request_id": request_id,
        "provider": provider,
        "model": _drop_none({"id": call.model_requested}),
        "auth": _auth(x, opts),
        "request_type": call.request_type,
        "streaming": call.streaming,
        "messages": messages if opts.content != "none" else None,
        "messages_count": len(call.messages),
        "has_system_prompt": call.system_prompt is not None,
        "system_prompt_hash": keyed_hash(opts, call.system_prompt) if call.system_prompt else None,
        "tools": [_drop_none({"name": t.get("name"), "type": "function",
                               "description": t.get("description")}) for t in call.tools] or None,
        "tools_count": len(call.tools),
        "tool_choice": call.tool_choice,
        "parameters": _drop_none({k: read(call.parameters.get(k)) for k, read in PARAMETERS.items()}) or None
        if call.parameters else None,
        "has_images": any(m.image_count for m in call.messages),
    })


def _usage_data(match: ProviderMatch, call: AiCall, opts: EventOptions) -> dict:
    """Token counts, and their cost when the model's price is known (analyzer/ai/pricing.py)."""
    u = call.usage
    usage = _drop_none({"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens,
                        "total_tokens": u.total_tokens, "cached_tokens": u.cached_tokens,
                        "cache_write_tokens": u.cache_write_tokens, "reasoning_tokens": u.reasoning_tokens})
    if call.usage_estimated_by and usage:  # counted here, not reported by the provider
        usage.update(estimated=True, estimated_by=call.usage_estimated_by)
    price = opts.prices.price(match.provider, call.model_returned or call.model_requested)
    if price is not None:
        usage.update(call_cost(u, price))
    return usage


def _response_data(x: Exchange, match: ProviderMatch, call: AiCall, opts: EventOptions, request_id: str,
                   provider: dict) -> dict:
    usage = _usage_data(match, call, opts)
    latency = None
    if x.request.start_ns and x.response.end_ns:
        latency = max(0, (x.response.end_ns - x.request.start_ns) // 1_000_000)
    # the status line was not decodable (HTTP/2 joined mid-connection): success is not known, unless
    # the body itself says the call failed
    success = (200 <= x.status < 300 and call.error is None) if x.status is not None \
        else (False if call.error else None)
    return _drop_none({
        "request_id": request_id,
        "provider_request_id": call.provider_request_id,
        "provider": provider,
        "model": _drop_none({"id": call.model_returned or call.model_requested}),
        "status_code": x.status,
        "success": success,
        "error": _drop_none({"type": call.error.type, "message": call.error.message,
                             "code": call.error.code})
        if call.error else ({"type": f"http_{x.status}"} if not success and x.status else None),
        "choices": [{"index": 0, "message": _drop_none({"role": "assistant",
                                                         "content": _content(opts, call.output_text)}),
                     **({"finish_reason": call.finish_reason} if call.finish_reason else {})}]
        if call.output_text is not None and opts.content != "none" else None,
        "tool_calls": [_drop_none({"id": t.id, "name": t.name, "type": "function",
                                   "arguments": _content(opts, t.arguments)})
                       for t in call.tool_calls] or None,
        "tool_calls_count": len(call.tool_calls),
        "usage": usage or None,
        "latency_ms": latency,
        "finish_reason": call.finish_reason,
    })
