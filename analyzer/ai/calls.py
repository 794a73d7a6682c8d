"""What one AI API call said, independent of the provider's wire format: the parsers of each API
format fill an AiCall from a request body and a response (JSON, or the events of a stream); the
event layer turns it into OISP ai.request / ai.response."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from analyzer.ai.formats.json_shapes import dicts_at, str_at
from analyzer.ai.json_budget import JsonRefused, loads_bounded
from analyzer.model import Limits


@dataclass
class Message:
    role: str
    content: str | None = None
    tool_call_id: str | None = None
    name: str | None = None
    image_count: int = 0


@dataclass
class ToolCall:
    id: str | None
    name: str | None
    arguments: str = ""


@dataclass
class Usage:
    prompt_tokens: int | None = None  # all input tokens, cache reads and writes included
    completion_tokens: int | None = None
    total_tokens: int | None = None
    cached_tokens: int | None = None  # of the prompt, read from the provider's cache
    reasoning_tokens: int | None = None
    cache_write_tokens: int | None = None  # of the prompt, written to the cache (Anthropic, Bedrock)
    # whether completion_tokens include the reasoning tokens (OpenAI's do; Gemini counts its thoughts apart)
    reasoning_in_completion: bool = True


@dataclass
class AiError:
    type: str | None = None
    message: str | None = None
    code: str | None = None


@dataclass
class AiCall:
    request_type: str = "chat"  # chat, completion, embedding, other
    streaming: bool = False
    model_requested: str | None = None
    model_returned: str | None = None
    messages: list[Message] = field(default_factory=list)
    system_prompt: str | None = None
    tools: list[dict] = field(default_factory=list)  # {"name", "description"}
    tool_choice: str | None = None
    parameters: dict = field(default_factory=dict)
    provider_request_id: str | None = None
    output_text: str | None = None  # the whole answer (a streamed one assembled)
    tool_calls: list[ToolCall] = field(default_factory=list)
    finish_reason: str | None = None  # OISP enum: stop, length, tool_calls, content_filter, error, other
    usage: Usage = field(default_factory=Usage)
    error: AiError | None = None
    first_token_index: int | None = None  # index of the stream event that carried the first token
    first_token_ns: int | None = None  # when that event's last byte was captured (stream_times.py)
    usage_estimated_by: str | None = None  # usage is an estimate, by this method (token_estimate.py)
    notes: list[str] = field(default_factory=list)
    # the stream's own end marker was seen ([DONE], message_stop, response.completed): the answer is
    # whole even when the HTTP framing after it was never read by the application
    stream_complete: bool = False
    # the budgets its stream events are parsed under (max_json_bytes, max_json_depth): EventOptions.limits
    limits: Limits = field(default_factory=Limits, repr=False, compare=False)


FINISH_REASONS = {"stop": "stop", "end_turn": "stop", "stop_sequence": "stop", "length": "length",
                  "max_tokens": "length", "tool_calls": "tool_calls", "tool_use": "tool_calls",
                  "function_call": "tool_calls", "content_filter": "content_filter", "STOP": "stop",
                  "MAX_TOKENS": "length", "SAFETY": "content_filter", "error": "error"}


def tool_info(spec: object) -> dict:
    """A tool definition as AiCall.tools keeps it: its name and description (None when absent)."""
    return {"name": str_at(spec, "name"), "description": str_at(spec, "description")}


def finish_reason(raw: object) -> str | None:
    """The OISP finish reason of a provider's: None when absent, "other" when unknown (or not text)."""
    if raw is None:
        return None
    return FINISH_REASONS.get(raw, "other") if isinstance(raw, str) else "other"


def stream_json(i: int, data: str, call: AiCall) -> object | None:
    """The JSON value of stream event `i`, or None, noted on the call when it is not JSON or over
    the JSON budgets, so a garbled stream says so instead of failing."""
    try:
        return loads_bounded(data, call.limits.max_json_bytes, call.limits.max_json_depth)
    except JsonRefused as e:
        call.notes.append(f"stream_event_not_parsed:{e.reason}")
    except ValueError:
        call.notes.append(f"stream event {i} is not JSON")
    return None


def json_events(events: list[tuple[str, str]], call: AiCall, done_marker: bool = False):
    """(index, event name, object) for every stream event whose data is a JSON object. With
    `done_marker`, OpenAI's `[DONE]` gives (index, name, None)."""
    for i, (name, data) in enumerate(events):
        if done_marker and data.strip() == "[DONE]":
            yield i, name, None
            continue
        obj = stream_json(i, data, call)
        if isinstance(obj, dict):
            yield i, name, obj


def add_conversation(call: AiCall, body: dict, text_of: Callable[[object], tuple[str | None, int]]) -> None:
    """A `system` field and a `messages` list (Anthropic's shape, which Bedrock's Converse shares), each
    message's content read by the format's `text_of` (content -> text, image count)."""
    system, _ = text_of(body.get("system"))
    if system:
        call.system_prompt = system
        call.messages.append(Message("system", system))
    for m in dicts_at(body, "messages"):
        text, images = text_of(m.get("content"))
        call.messages.append(Message(str_at(m, "role") or "user", text, image_count=images))
