"""AWS Bedrock runtime: Converse (`/model/{id}/converse`), ConverseStream (`/converse-stream`,
event-stream framing) and InvokeModel / InvokeModelWithResponseStream with Anthropic bodies."""

from __future__ import annotations

import base64
import json
import re
from urllib.parse import unquote

from analyzer.ai.calls import (
    AiCall,
    AiError,
    ToolCall,
    Usage,
    add_conversation,
    finish_reason,
    stream_json,
    tool_info,
)
from analyzer.ai.formats import anthropic_messages
from analyzer.ai.formats.json_shapes import dict_at, dicts_at, int_at, str_at

INFERENCE = {"maxTokens": "max_tokens", "temperature": "temperature", "topP": "top_p",
             "stopSequences": "stop"}
_MODEL = re.compile(r"/model/([^/]+)/(converse-stream|converse|invoke-with-response-stream|invoke)")


def _route(path: str) -> tuple[str | None, str]:
    m = _MODEL.search(path)
    return (unquote(m.group(1)), m.group(2)) if m else (None, "")


def _text(content) -> tuple[str, int]:
    texts, images = [], 0
    for block in content if isinstance(content, list) else []:
        if isinstance(block, dict):
            if "text" in block:
                texts.append(str(block["text"]))
            elif "image" in block:
                images += 1
    return "".join(texts), images


def parse_request(body: dict, call: AiCall, path: str = "") -> None:
    model, op = _route(path)
    if op.startswith("invoke") and "messages" in body:
        anthropic_messages.parse_request(body, call)
        call.streaming = op == "invoke-with-response-stream"
        call.model_requested = model
        return
    call.request_type = "chat"
    call.model_requested = model
    call.streaming = op == "converse-stream"
    add_conversation(call, body, _text)
    for t in dicts_at(body, "toolConfig", "tools"):
        call.tools.append(tool_info(t.get("toolSpec")))
    config = dict_at(body, "inferenceConfig") or {}
    call.parameters = {ours: config[theirs] for theirs, ours in INFERENCE.items() if theirs in config}


def _usage(u: object, call: AiCall) -> None:
    if not isinstance(u, dict) or not u:
        return
    base = int_at(u, "inputTokens")
    read, write = int_at(u, "cacheReadInputTokens") or 0, int_at(u, "cacheWriteInputTokens") or 0
    call.usage = Usage(None if base is None else base + read + write, int_at(u, "outputTokens"),
                       int_at(u, "totalTokens"), read or None, cache_write_tokens=write or None)


def parse_response(body: dict, call: AiCall) -> None:
    if body.get("type") == "message" or body.get("type") == "error":  # InvokeModel, Anthropic body
        anthropic_messages.parse_response(body, call)
        return
    if "output" not in body and "message" in body:  # {"message": "..."} error shape
        call.error = AiError(str_at(body, "__type"), str_at(body, "message"), None)
        return
    msg = dict_at(body, "output", "message") or {}
    text, _ = _text(msg.get("content"))
    call.output_text = text
    for block in dicts_at(msg, "content"):
        use = dict_at(block, "toolUse")
        if use:
            call.tool_calls.append(ToolCall(str_at(use, "toolUseId"), str_at(use, "name"),
                                            json.dumps(use.get("input", {}), sort_keys=True)))
    call.finish_reason = finish_reason(body.get("stopReason"))
    _usage(body.get("usage"), call)


def parse_stream(events: list[tuple[str, str]], call: AiCall) -> None:
    """(event type, JSON payload) pairs decoded from the event-stream framing."""
    text: list[str] = []
    inner: list[tuple[str, str]] = []
    for i, (name, data) in enumerate(events):
        ev = stream_json(i, data, call) if data else {}
        if not isinstance(ev, dict):
            continue
        if name == "chunk" and "bytes" in ev:  # InvokeModelWithResponseStream: Anthropic events inside
            payload = _chunk_payload(ev["bytes"])
            inner.append((str_at(stream_json(i, payload, call), "type") or "", payload))
        elif name == "contentBlockDelta":
            piece = str_at(ev, "delta", "text")
            if piece:
                if call.first_token_index is None:
                    call.first_token_index = i
                text.append(piece)
        elif name == "messageStop":
            call.finish_reason = finish_reason(ev.get("stopReason"))
        elif name == "metadata":
            _usage(ev.get("usage"), call)
        elif name.endswith("Exception"):
            call.error = AiError(name, str_at(ev, "message"), None)
    if inner:
        anthropic_messages.parse_stream(inner, call)
    else:
        call.output_text = "".join(text)


def _chunk_payload(data: object) -> str:
    """The Anthropic event a `chunk` carries base64-encoded ("" when it is not base64 text)."""
    try:
        return base64.b64decode(data if isinstance(data, str) else "").decode("utf-8", "replace")
    except ValueError:  # binascii.Error
        return ""
