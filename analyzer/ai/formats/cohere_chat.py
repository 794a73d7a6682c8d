"""Cohere chat v2 (`/v2/chat`): request, JSON response and SSE stream (message-start,
content-delta, tool-call-delta, message-end with usage)."""

from __future__ import annotations

from analyzer.ai.calls import AiCall, AiError, Message, ToolCall, Usage, json_events, tool_info
from analyzer.ai.formats.json_shapes import at, dict_at, dicts_at, int_at, str_at

_FINISH = {"COMPLETE": "stop", "STOP_SEQUENCE": "stop", "MAX_TOKENS": "length",
           "TOOL_CALL": "tool_calls", "ERROR": "error"}
PARAMETERS = {"temperature": "temperature", "p": "top_p", "max_tokens": "max_tokens",
              "stop_sequences": "stop"}


def _content(content) -> str | None:
    if content is None or isinstance(content, str):
        return content
    return "".join(str(c.get("text", "")) for c in content if isinstance(c, dict)) \
        if isinstance(content, list) else ""


def _finish(reason: object) -> str | None:
    if not reason:
        return None
    return _FINISH.get(reason, "other") if isinstance(reason, str) else "other"


def parse_request(body: dict, call: AiCall, path: str = "") -> None:
    call.request_type = "chat"
    call.model_requested = str_at(body, "model")
    call.streaming = bool(body.get("stream"))
    for m in dicts_at(body, "messages"):
        text = _content(m.get("content"))
        role = str_at(m, "role") or "user"
        call.messages.append(Message(role, text, str_at(m, "tool_call_id")))
        if role == "system" and call.system_prompt is None:
            call.system_prompt = text
    for t in dicts_at(body, "tools"):
        call.tools.append(tool_info(t.get("function")))
    call.parameters = {ours: body[theirs] for theirs, ours in PARAMETERS.items() if theirs in body}


def _usage(u: object) -> Usage:
    tokens = at(u, "tokens") or at(u, "billed_units") or {}
    p, c = int_at(tokens, "input_tokens"), int_at(tokens, "output_tokens")
    return Usage(p, c, (p or 0) + (c or 0) if p is not None and c is not None else None)


def parse_response(body: dict, call: AiCall) -> None:
    if "finish_reason" not in body and isinstance(body.get("message"), str):
        call.error = AiError(None, body["message"], None)  # errors are {"id": ..., "message": "..."}
        return
    call.provider_request_id = str_at(body, "id")
    msg = dict_at(body, "message") or {}
    call.output_text = _content(msg.get("content")) or ""
    for tc in dicts_at(msg, "tool_calls"):
        call.tool_calls.append(ToolCall(str_at(tc, "id"), str_at(tc, "function", "name"),
                                        str_at(tc, "function", "arguments") or ""))
    call.finish_reason = _finish(body.get("finish_reason"))
    call.usage = _usage(body.get("usage"))


def parse_stream(events: list[tuple[str, str]], call: AiCall) -> None:
    text: list[str] = []
    tools: dict[int, ToolCall] = {}
    for i, name, ev in json_events(events, call):
        kind = ev.get("type", name)
        delta = dict_at(ev, "delta") or {}
        msg = dict_at(delta, "message") or {}
        index = int_at(ev, "index") or 0
        if kind == "message-start":
            call.provider_request_id = str_at(ev, "id")
        elif kind == "content-delta":
            piece = str_at(msg, "content", "text") or ""
            if piece and call.first_token_index is None:
                call.first_token_index = i
            text.append(piece)
        elif kind == "tool-call-start":
            tc = dict_at(msg, "tool_calls") or {}
            tools[index] = ToolCall(str_at(tc, "id"), str_at(tc, "function", "name"),
                                    str_at(tc, "function", "arguments") or "")
        elif kind == "tool-call-delta" and index in tools:
            tools[index].arguments += str_at(msg, "tool_calls", "function", "arguments") or ""
        elif kind == "message-end":
            if delta.get("finish_reason"):
                call.finish_reason = _finish(delta["finish_reason"])
            call.usage = _usage(delta.get("usage"))
    call.output_text = "".join(text)
    call.tool_calls = [tools[k] for k in sorted(tools)]
