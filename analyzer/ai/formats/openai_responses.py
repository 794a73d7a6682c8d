"""OpenAI Responses API (`/v1/responses`): request, JSON response and its typed SSE events
(`response.output_text.delta`, `response.function_call_arguments.delta`, `response.completed`...)."""

from __future__ import annotations

from analyzer.ai.calls import AiCall, AiError, Message, ToolCall, Usage, json_events, tool_info
from analyzer.ai.formats.json_shapes import dict_at, dicts_at, int_at, str_at
from analyzer.ai.formats.openai_chat import content_text

PARAMETERS = {"temperature": "temperature", "top_p": "top_p", "max_output_tokens": "max_tokens"}
_STATUS = {"completed": "stop", "incomplete": "length", "failed": "error"}


def parse_request(body: dict, call: AiCall, path: str = "") -> None:
    call.request_type = "chat"
    call.model_requested = str_at(body, "model")
    call.streaming = bool(body.get("stream"))
    instructions = str_at(body, "instructions")
    if instructions:
        call.system_prompt = instructions
        call.messages.append(Message("system", instructions))
    items = body.get("input")
    if isinstance(items, str):
        call.messages.append(Message("user", items))
    for item in items if isinstance(items, list) else []:
        if isinstance(item, dict) and item.get("type", "message") == "message":
            text, images = content_text(item.get("content"))
            role = str_at(item, "role") or "user"
            role = "system" if role == "developer" else role
            call.messages.append(Message(role, text, image_count=images))
    for t in dicts_at(body, "tools"):
        call.tools.append({**tool_info(t), "name": str_at(t, "name") or str_at(t, "type")})
    call.parameters = {ours: body[theirs] for theirs, ours in PARAMETERS.items() if theirs in body}


def _usage(u: object) -> Usage:
    return Usage(int_at(u, "input_tokens"), int_at(u, "output_tokens"), int_at(u, "total_tokens"),
                 int_at(u, "input_tokens_details", "cached_tokens"),
                 int_at(u, "output_tokens_details", "reasoning_tokens"))


def parse_response(body: dict, call: AiCall) -> None:
    if body.get("error"):
        err = body["error"]
        call.error = AiError(str_at(err, "type"), str_at(err, "message"), str_at(err, "code")) \
            if isinstance(err, dict) else AiError(None, str_at(body, "error"), None)
        if "output" not in body:
            return
    call.provider_request_id = str_at(body, "id")
    call.model_returned = str_at(body, "model")
    texts = []
    call.tool_calls = []
    for item in dicts_at(body, "output"):
        if item.get("type") == "message":
            t, _ = content_text(item.get("content"))
            texts.append(t or "")
        elif item.get("type") == "function_call":
            call.tool_calls.append(ToolCall(str_at(item, "call_id"), str_at(item, "name"),
                                            str_at(item, "arguments") or ""))
    call.output_text = "".join(texts)
    status = body.get("status")
    call.finish_reason = "tool_calls" if call.tool_calls else \
        _STATUS.get(status, "other") if isinstance(status, str) else "other"
    call.usage = _usage(body.get("usage"))


def parse_stream(events: list[tuple[str, str]], call: AiCall) -> None:
    deltas: list[str] = []
    completed = False
    for i, name, ev in json_events(events, call):
        kind = ev.get("type", name)
        if kind == "response.output_text.delta":
            if call.first_token_index is None:
                call.first_token_index = i
            deltas.append(str_at(ev, "delta") or "")
        elif kind in ("response.completed", "response.incomplete", "response.failed"):
            completed = True
            parse_response(dict_at(ev, "response") or {}, call)
        elif kind == "response.created":
            call.provider_request_id = str_at(ev, "response", "id")
        elif kind == "error":
            call.error = AiError(str_at(ev, "code"), str_at(ev, "message"), str_at(ev, "code"))
    call.stream_complete = completed
    if not completed:
        call.output_text = "".join(deltas)
        call.notes.append("stream ended without response.completed")
