"""Cohere chat v2 (`/v2/chat`): request, JSON response and SSE stream (message-start,
content-delta, tool-call-delta, message-end with usage)."""

from __future__ import annotations

from analyzer.ai.calls import AiCall, AiError, Message, ToolCall, Usage, json_events

_FINISH = {"COMPLETE": "stop", "STOP_SEQUENCE": "stop", "MAX_TOKENS": "length",
           "TOOL_CALL": "tool_calls", "ERROR": "error"}
PARAMETERS = {"temperature": "temperature", "p": "top_p", "max_tokens": "max_tokens",
              "stop_sequences": "stop"}


def _content(content) -> str | None:
    if content is None or isinstance(content, str):
        return content
    return "".join(str(c.get("text", "")) for c in content if isinstance(c, dict))


def parse_request(body: dict, call: AiCall, path: str = "") -> None:
    call.request_type = "chat"
    call.model_requested = body.get("model")
    call.streaming = bool(body.get("stream"))
    for m in body.get("messages") or []:
        if isinstance(m, dict):
            text = _content(m.get("content"))
            call.messages.append(Message(m.get("role", "user"), text, m.get("tool_call_id")))
            if m.get("role") == "system" and call.system_prompt is None:
                call.system_prompt = _content(m.get("content"))
    for t in body.get("tools") or []:
        fn = (t or {}).get("function") or {}
        call.tools.append({"name": fn.get("name"), "description": fn.get("description")})
    call.parameters = {ours: body[theirs] for theirs, ours in PARAMETERS.items() if theirs in body}


def _usage(u: dict | None) -> Usage:
    tokens = (u or {}).get("tokens") or (u or {}).get("billed_units") or {}
    p, c = tokens.get("input_tokens"), tokens.get("output_tokens")
    return Usage(p, c, (p or 0) + (c or 0) if p is not None and c is not None else None)


def parse_response(body: dict, call: AiCall) -> None:
    if "finish_reason" not in body and isinstance(body.get("message"), str):
        call.error = AiError(None, body["message"], None)  # errors are {"id": ..., "message": "..."}
        return
    call.provider_request_id = body.get("id")
    msg = body.get("message") or {}
    call.output_text = _content(msg.get("content")) or ""
    for tc in msg.get("tool_calls") or []:
        fn = tc.get("function") or {}
        call.tool_calls.append(ToolCall(tc.get("id"), fn.get("name"), fn.get("arguments", "")))
    reason = body.get("finish_reason")
    call.finish_reason = _FINISH.get(reason, "other") if reason else None
    call.usage = _usage(body.get("usage"))


def parse_stream(events: list[tuple[str, str]], call: AiCall) -> None:
    text: list[str] = []
    tools: dict[int, ToolCall] = {}
    for i, name, ev in json_events(events, call):
        kind = ev.get("type", name)
        delta = ev.get("delta") or {}
        msg = delta.get("message") or {}
        if kind == "message-start":
            call.provider_request_id = ev.get("id")
        elif kind == "content-delta":
            piece = (msg.get("content") or {}).get("text", "")
            if piece and call.first_token_index is None:
                call.first_token_index = i
            text.append(piece)
        elif kind == "tool-call-start":
            tc = msg.get("tool_calls") or {}
            tools[ev.get("index", 0)] = ToolCall(tc.get("id"), (tc.get("function") or {}).get("name"),
                                                 (tc.get("function") or {}).get("arguments", ""))
        elif kind == "tool-call-delta" and ev.get("index", 0) in tools:
            fn = (msg.get("tool_calls") or {}).get("function") or {}
            tools[ev["index"]].arguments += fn.get("arguments", "")
        elif kind == "message-end":
            if delta.get("finish_reason"):
                call.finish_reason = _FINISH.get(delta["finish_reason"], "other")
            call.usage = _usage(delta.get("usage"))
    call.output_text = "".join(text)
    call.tool_calls = [tools[k] for k in sorted(tools)]
