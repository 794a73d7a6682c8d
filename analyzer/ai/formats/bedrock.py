"""AWS Bedrock runtime: Converse (`/model/{id}/converse`), ConverseStream (`/converse-stream`,
event-stream framing) and InvokeModel / InvokeModelWithResponseStream with Anthropic bodies."""

from __future__ import annotations

import base64
import json
import re
from urllib.parse import unquote

from analyzer.ai.calls import AiCall, AiError, Message, ToolCall, Usage, finish_reason
from analyzer.ai.formats import anthropic_messages

INFERENCE = {"maxTokens": "max_tokens", "temperature": "temperature", "topP": "top_p",
             "stopSequences": "stop"}
_MODEL = re.compile(r"/model/([^/]+)/(converse-stream|converse|invoke-with-response-stream|invoke)")


def _route(path: str) -> tuple[str | None, str]:
    m = _MODEL.search(path)
    return (unquote(m.group(1)), m.group(2)) if m else (None, "")


def _text(content) -> tuple[str, int]:
    texts, images = [], 0
    for block in content or []:
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
    system, _ = _text(body.get("system"))
    if system:
        call.system_prompt = system
        call.messages.append(Message("system", system))
    for m in body.get("messages") or []:
        text, images = _text(m.get("content"))
        call.messages.append(Message(m.get("role", "user"), text, image_count=images))
    for t in (body.get("toolConfig") or {}).get("tools") or []:
        spec = (t or {}).get("toolSpec") or {}
        call.tools.append({"name": spec.get("name"), "description": spec.get("description")})
    config = body.get("inferenceConfig") or {}
    call.parameters = {ours: config[theirs] for theirs, ours in INFERENCE.items() if theirs in config}


def _usage(u: dict | None, call: AiCall) -> None:
    if not u:
        return
    base = u.get("inputTokens")
    read, write = u.get("cacheReadInputTokens") or 0, u.get("cacheWriteInputTokens") or 0
    call.usage = Usage(None if base is None else base + read + write, u.get("outputTokens"),
                       u.get("totalTokens"), read or None)


def parse_response(body: dict, call: AiCall) -> None:
    if body.get("type") == "message" or body.get("type") == "error":  # InvokeModel, Anthropic body
        anthropic_messages.parse_response(body, call)
        return
    if "output" not in body and "message" in body:  # {"message": "..."} error shape
        call.error = AiError(body.get("__type"), body.get("message"), None)
        return
    msg = (body.get("output") or {}).get("message") or {}
    text, _ = _text(msg.get("content"))
    call.output_text = text
    for block in msg.get("content") or []:
        use = block.get("toolUse") if isinstance(block, dict) else None
        if use:
            call.tool_calls.append(ToolCall(use.get("toolUseId"), use.get("name"),
                                            json.dumps(use.get("input", {}), sort_keys=True)))
    call.finish_reason = finish_reason(body.get("stopReason"))
    _usage(body.get("usage"), call)


def parse_stream(events: list[tuple[str, str]], call: AiCall) -> None:
    """(event type, JSON payload) pairs decoded from the event-stream framing."""
    text: list[str] = []
    inner: list[tuple[str, str]] = []
    for i, (name, data) in enumerate(events):
        try:
            ev = json.loads(data) if data else {}
        except ValueError:
            call.notes.append(f"stream event {i} is not JSON")
            continue
        if name == "chunk" and "bytes" in ev:  # InvokeModelWithResponseStream: Anthropic events inside
            payload = base64.b64decode(ev["bytes"]).decode("utf-8", "replace")
            inner.append((json.loads(payload).get("type", ""), payload))
        elif name == "contentBlockDelta":
            piece = (ev.get("delta") or {}).get("text")
            if piece:
                if call.first_token_index is None:
                    call.first_token_index = i
                text.append(piece)
        elif name == "messageStop":
            call.finish_reason = finish_reason(ev.get("stopReason"))
        elif name == "metadata":
            _usage(ev.get("usage"), call)
        elif name.endswith("Exception"):
            call.error = AiError(name, ev.get("message"), None)
    if inner:
        anthropic_messages.parse_stream(inner, call)
    else:
        call.output_text = "".join(text)
