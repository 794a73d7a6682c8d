"""From an HTTP exchange to OISP events: classify the provider, parse the bodies with the parser of
its API format, build the events. Exchanges that are not AI calls give no events.

Bodies are JSON from any pod: the parsers read them through typed accessors (formats/json_shapes)
and JSON over the size or depth budget (json_budget) is not parsed, which the events say in
`confidence.limitations` (`request_body_not_parsed:json_too_deep`, ...).

Exception boundary, per exchange: should building the events raise anyway (a parser bug on a shape
nobody foresaw), the exchange still gives its ai.request (and ai.response when one was captured)
when its host or path names a provider, built from what is known without the bodies: provider,
endpoint, status, the model when the request body names one as a string. Their `confidence.level` is
low and `confidence.limitations` says `parse_error:<ExceptionType>`. When even that fails, or no
provider is recognized, the exchange gives no events. Either way `analyze_exchange` returns the
exception's type name in `parse_error`, for callers to count; `exchange_events` returns the events.
"""

from __future__ import annotations

from dataclasses import dataclass

from analyzer.ai import token_estimate
from analyzer.ai.calls import AiCall
from analyzer.ai.events import EventOptions, build_events
from analyzer.ai.formats import (
    anthropic_messages,
    bedrock,
    cohere_chat,
    gemini,
    ollama,
    openai_chat,
    openai_completions,
    openai_embeddings,
    openai_responses,
)
from analyzer.ai.json_budget import JsonRefused, loads_bounded
from analyzer.ai.providers import ProviderRegistry
from analyzer.ai.stream_times import item_time
from analyzer.http.aws_eventstream import EventStreamError, decode
from analyzer.http.bodies import decode_body, split_ndjson, split_sse
from analyzer.http.body_kind import BodyKind, body_kind, content_encoding
from analyzer.model import ConnectionInfo, Exchange, HttpMessage, Limits

# path fragment -> parser module, the first match wins. Paths, not providers, decide: Ollama and
# vLLM also speak OpenAI's /v1/chat/completions, gateways speak several formats.
PARSERS = [
    ("/chat/completions", openai_chat),
    ("/v1/responses", openai_responses),
    ("/v1/completions", openai_completions),
    ("/v2/chat", cohere_chat),
    ("/embeddings", openai_embeddings),
    ("/v1/messages", anthropic_messages),
    (":generateContent", gemini),
    (":streamGenerateContent", gemini),
    ("/converse", bedrock),
    ("/invoke", bedrock),
    ("/api/chat", ollama),
    ("/api/generate", ollama),
]


@dataclass(frozen=True)
class NotParsed:
    """A JSON body left unparsed because it is over a budget (json_budget): `reason` says which."""
    reason: str


def _json(msg: HttpMessage, limits: Limits) -> tuple[object | None, list | None]:
    """The decoded body as JSON (NotParsed when over a JSON budget), or its stream as (event, data)
    pairs: SSE events, NDJSON lines (event "ndjson") or AWS event-stream messages (their :event-type)."""
    decoded = decode_body(msg.body, content_encoding(msg), limits.max_decoded_body_bytes)
    if decoded.error:
        return None, None
    kind = body_kind(msg, decoded.data)
    if kind is BodyKind.AWS_EVENTSTREAM:
        try:
            messages, _ = decode(decoded.data)
        except EventStreamError:
            return None, None
        return None, [(m.event_type or "", m.payload.decode("utf-8", "replace")) for m in messages]
    if kind is BodyKind.NDJSON:
        lines, _ = split_ndjson(decoded.data, limits.max_event_line_bytes)
        return None, [("ndjson", line) for line in lines]
    if kind is BodyKind.SSE:
        events, tail, _ = split_sse(decoded.data, limits.max_event_line_bytes)
        return None, [(e.event, e.data) for e in events + tail]
    # JSON, or OTHER: servers label JSON loosely, and without captured headers nothing says it is
    try:
        return loads_bounded(decoded.data, limits.max_json_bytes, limits.max_json_depth), None
    except JsonRefused as e:
        return NotParsed(e.reason), None
    except ValueError:
        return None, None


def _module_by_shape(body: dict):
    """The parser for a request known only by its body (no path): the shapes the formats differ by."""
    if "contents" in body:
        return gemini
    if "max_tokens" in body and "messages" in body and isinstance(body.get("system"), (str, list)):
        return anthropic_messages
    if "messages" in body:
        return openai_chat
    if "input" in body:
        return openai_embeddings if isinstance(body.get("input"), list) else openai_responses
    if "prompt" in body:
        return openai_completions
    return None


def looks_like_ai_body(body: object, path: str = "") -> bool:
    """The shape of an AI API request, for hosts known only by their path: a model (in the body, or
    in a Gemini-style path) and an input."""
    has_model = isinstance(body, dict) and (isinstance(body.get("model"), str) or "/models/" in path)
    return has_model and any(k in body for k in ("messages", "prompt", "input", "contents"))


@dataclass
class ExchangeEvents:
    """The events of one exchange, and the type name of the exception that building them raised
    (None when none did): the fallback events of the module docstring, or none."""
    events: list[dict]
    parse_error: str | None = None


def analyze_exchange(x: Exchange, registry: ProviderRegistry, opts: EventOptions) -> ExchangeEvents:
    """The events of an exchange, never raising for what the exchange carries (module docstring)."""
    try:
        return ExchangeEvents(_events(x, registry, opts))
    except Exception as e:  # noqa: BLE001 - hostile input costs its exchange's detail, never the run
        error = type(e).__name__
    try:
        return ExchangeEvents(_fallback_events(x, registry, opts, error), error)
    except Exception:  # noqa: BLE001 - not even the bodiless events: none, and the error counted
        return ExchangeEvents([], error)


def exchange_events(x: Exchange, registry: ProviderRegistry, opts: EventOptions) -> list[dict]:
    """The OISP events of an exchange ([] when it is not an AI call); see analyze_exchange."""
    return analyze_exchange(x, registry, opts).events


def reported_here(c: ConnectionInfo) -> bool:
    """Whether this end of a connection reports its calls: the client's; the server's only for
    plaintext whose client end was not captured (a client off the node). When both ends are
    captured, the client end reports (TLS: the server end is never reported)."""
    return c.role == "client" or c.tls_stack == "plaintext" and c.counterpart is None


def _fallback_events(x: Exchange, registry: ProviderRegistry, opts: EventOptions, error: str) -> list[dict]:
    """Events from what is known of an exchange whose bodies could not be turned into events."""
    if not reported_here(x.connection):
        return []
    match = registry.classify(x.authority or x.connection.server_name, x.path or "")
    if match is None:
        return []
    body, _ = _json(x.request, opts.limits)
    model = body.get("model") if isinstance(body, dict) else None
    call = AiCall(request_type="other", model_requested=model if isinstance(model, str) else None,
                  notes=[f"parse_error:{error}"], limits=opts.limits)
    events = build_events(x, match, call, opts)
    for event in events:
        event["confidence"]["level"] = "low"
    return events


def _body_notes(body: object, which: str) -> list[str]:
    """The limitation of a body over a JSON budget (request_body_not_parsed:json_too_deep...)."""
    return [f"{which}_body_not_parsed:{body.reason}"] if isinstance(body, NotParsed) else []


def _events(x: Exchange, registry: ProviderRegistry, opts: EventOptions) -> list[dict]:
    if not reported_here(x.connection):
        return []  # the client end of the same call is reported instead (when both are captured)
    path = x.path or ""
    # the Host or :authority header names the service; the TLS server name stands in when the
    # headers were not captured (HTTP/2 joined mid-connection)
    match = registry.classify(x.authority or x.connection.server_name, path)
    if match is None and x.request.headers_reliable:
        return []  # no provider by host or path, and headers to tell: not an AI call (its body is not read)
    body, _ = _json(x.request, opts.limits)
    notes = _body_notes(body, "request")
    module = next((m for fragment, m in PARSERS if fragment in path), None)
    if match is None and not x.request.headers_reliable and looks_like_ai_body(body, path):
        # capture began mid-connection (HTTP/2: the header table was missed; no server name, no
        # path): an AI-shaped body still says what the call was, with low confidence
        match = registry.match_by_body()
        module = module or _module_by_shape(body)
    if match is None:
        return []
    call = AiCall(request_type="other", notes=notes, limits=opts.limits)
    if match.matched_by == "path" and not looks_like_ai_body(body, path):
        return []  # a path that merely looks like an AI API, with no AI body: not an AI call
    if module is None and not isinstance(body, dict):
        return []  # a provider's host, but no API call: a health check, a model list, a page
    if module is None or not isinstance(body, dict):
        if isinstance(body, dict):
            call.model_requested = body.get("model") if isinstance(body.get("model"), str) else None
        return build_events(x, match, call, opts)
    module.parse_request(body, call, path)
    resp_body, resp_events = _json(x.response, opts.limits)
    call.notes += _body_notes(resp_body, "response")
    if resp_events is not None:
        call.streaming = True
        module.parse_stream(resp_events, call)
        if call.first_token_index is not None:
            call.first_token_ns = item_time(x.response, opts.limits, call.first_token_index)
        if call.error is None and x.status is not None and 200 <= x.status < 300:
            call.usage_estimated_by = token_estimate.apply(call, match.oisp_name)
    elif isinstance(resp_body, dict) or (
            isinstance(resp_body, list) and getattr(module, "JSON_ARRAY_STREAM", False)):
        module.parse_response(resp_body, call)
    return build_events(x, match, call, opts)
