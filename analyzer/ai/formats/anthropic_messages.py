"""Anthropic messages (`/v1/messages`): request, JSON response and the typed SSE stream
(message_start, content_block_start/delta/stop, message_delta with usage, message_stop, error).

Input tokens follow the OpenTelemetry GenAI convention: input_tokens + cache_read_input_tokens +
cache_creation_input_tokens (Anthropic reports them apart; counting only input_tokens undercounts
cached prompts, a mistake the peers made)."""

from __future__ import annotations

import json

from analyzer.ai.calls import (
    AiCall,
    AiError,
    ToolCall,
    Usage,
    add_conversation,
    finish_reason,
    json_events,
    tool_info,
)
from analyzer.ai.formats.json_shapes import dict_at, dicts_at, int_at, str_at

PARAMETERS = ("temperature", "top_p", "top_k", "max_tokens", "stop_sequences")


def _text(content) -> tuple[str | None, int]:
    if content is None or isinstance(content, str):
        return content, 0
    texts, images = [], 0
    for block in content if isinstance(content, list) else []:
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text":
            texts.append(str(block.get("text", "")))
        elif block.get("type") == "image":
            images += 1
        elif block.get("type") == "tool_result":
            inner, _ = _text(block.get("content"))
            texts.append(inner or "")
    return "\n".join(texts), images


def parse_request(body: dict, call: AiCall, path: str = "") -> None:
    call.request_type = "chat"
    call.model_requested = str_at(body, "model")
    call.streaming = bool(body.get("stream"))
    add_conversation(call, body, _text)
    for t in dicts_at(body, "tools"):
        call.tools.append(tool_info(t))
    kind = str_at(body, "tool_choice", "type")
    if isinstance(body.get("tool_choice"), dict):
        call.tool_choice = {"tool": "specific", "any": "required"}.get(kind, kind)
    call.parameters = {k: body[k] for k in PARAMETERS if k in body}
    if "stop_sequences" in call.parameters:
        call.parameters["stop"] = call.parameters.pop("stop_sequences")


def _usage(u: object, into: Usage) -> Usage:
    if not isinstance(u, dict):
        return into
    base = int_at(u, "input_tokens")
    read = int_at(u, "cache_read_input_tokens") or 0
    created = int_at(u, "cache_creation_input_tokens") or 0
    if base is not None:
        into.prompt_tokens = base + read + created
        into.cached_tokens = read or into.cached_tokens
        into.cache_write_tokens = created or into.cache_write_tokens
    if int_at(u, "output_tokens") is not None:
        into.completion_tokens = u["output_tokens"]
    if into.prompt_tokens is not None and into.completion_tokens is not None:
        into.total_tokens = into.prompt_tokens + into.completion_tokens
    return into


def _error(body: dict, call: AiCall) -> None:
    call.error = AiError(str_at(body, "error", "type"), str_at(body, "error", "message"), None)


def parse_response(body: dict, call: AiCall) -> None:
    if body.get("type") == "error":
        _error(body, call)
        return
    call.provider_request_id = str_at(body, "id")
    call.model_returned = str_at(body, "model")
    texts = []
    for block in dicts_at(body, "content"):
        if block.get("type") == "text":
            texts.append(str_at(block, "text") or "")
        elif block.get("type") == "tool_use":
            call.tool_calls.append(ToolCall(str_at(block, "id"), str_at(block, "name"),
                                            json.dumps(block.get("input", {}), sort_keys=True)))
    call.output_text = "".join(texts)
    call.finish_reason = finish_reason(body.get("stop_reason"))
    call.usage = _usage(body.get("usage"), Usage())


def parse_stream(events: list[tuple[str, str]], call: AiCall) -> None:
    """(event name, data) pairs of the SSE stream, in order."""
    text: list[str] = []
    blocks: dict[int, ToolCall] = {}
    stopped = False
    for i, name, ev in json_events(events, call):
        kind = ev.get("type", name)
        index = int_at(ev, "index") or 0
        if kind == "message_start":
            msg = dict_at(ev, "message") or {}
            call.provider_request_id = str_at(msg, "id")
            call.model_returned = str_at(msg, "model")
            call.usage = _usage(msg.get("usage"), call.usage)
        elif kind == "content_block_start":
            block = dict_at(ev, "content_block") or {}
            if block.get("type") == "tool_use":
                blocks[index] = ToolCall(str_at(block, "id"), str_at(block, "name"))
        elif kind == "content_block_delta":
            delta = dict_at(ev, "delta") or {}
            if delta.get("type") == "text_delta":
                if call.first_token_index is None:
                    call.first_token_index = i
                text.append(str_at(delta, "text") or "")
            elif delta.get("type") == "input_json_delta" and index in blocks:
                blocks[index].arguments += str_at(delta, "partial_json") or ""
        elif kind == "message_delta":
            delta = dict_at(ev, "delta") or {}
            if delta.get("stop_reason"):
                call.finish_reason = finish_reason(delta["stop_reason"])
            call.usage = _usage(ev.get("usage"), call.usage)
        elif kind == "message_stop":
            stopped = True
        elif kind == "error":
            _error(ev, call)
    call.output_text = "".join(text)
    call.tool_calls = [blocks[k] for k in sorted(blocks)]
    if not stopped and call.error is None:
        call.notes.append("stream ended without message_stop")
    call.stream_complete = stopped
