"""OpenAI Responses API (`/v1/responses`): request, JSON response and its typed SSE events
(`response.output_text.delta`, `response.function_call_arguments.delta`, `response.completed`...)."""

from __future__ import annotations

from analyzer.ai.calls import AiCall, AiError, Message, ToolCall, Usage, json_events
from analyzer.ai.formats.openai_chat import content_text

PARAMETERS = {"temperature": "temperature", "top_p": "top_p", "max_output_tokens": "max_tokens"}
_STATUS = {"completed": "stop", "incomplete": "length", "failed": "error"}


def parse_request(body: dict, call: AiCall, path: str = "") -> None:
    call.request_type = "chat"
    call.model_requested = body.get("model")
    call.streaming = bool(body.get("stream"))
    if body.get("instructions"):
        call.system_prompt = body["instructions"]
        call.messages.append(Message("system", body["instructions"]))
    items = body.get("input")
    if isinstance(items, str):
        call.messages.append(Message("user", items))
    for item in items if isinstance(items, list) else []:
        if isinstance(item, dict) and item.get("type", "message") == "message":
            text, images = content_text(item.get("content"))
            role = {"developer": "system"}.get(item.get("role"), item.get("role", "user"))
            call.messages.append(Message(role, text, image_count=images))
    for t in body.get("tools") or []:
        if isinstance(t, dict):
            call.tools.append({"name": t.get("name") or t.get("type"), "description": t.get("description")})
    call.parameters = {ours: body[theirs] for theirs, ours in PARAMETERS.items() if theirs in body}


def _usage(u: dict | None) -> Usage:
    u = u or {}
    return Usage(u.get("input_tokens"), u.get("output_tokens"), u.get("total_tokens"),
                 (u.get("input_tokens_details") or {}).get("cached_tokens"),
                 (u.get("output_tokens_details") or {}).get("reasoning_tokens"))


def parse_response(body: dict, call: AiCall) -> None:
    if body.get("error"):
        err = body["error"]
        call.error = AiError(err.get("type"), err.get("message"), err.get("code"))
        if "output" not in body:
            return
    call.provider_request_id = body.get("id")
    call.model_returned = body.get("model")
    texts = []
    call.tool_calls = []
    for item in body.get("output") or []:
        if item.get("type") == "message":
            t, _ = content_text(item.get("content"))
            texts.append(t or "")
        elif item.get("type") == "function_call":
            call.tool_calls.append(ToolCall(item.get("call_id"), item.get("name"), item.get("arguments", "")))
    call.output_text = "".join(texts)
    call.finish_reason = "tool_calls" if call.tool_calls else _STATUS.get(body.get("status"), "other")
    call.usage = _usage(body.get("usage"))


def parse_stream(events: list[tuple[str, str]], call: AiCall) -> None:
    deltas: list[str] = []
    completed = False
    for i, name, ev in json_events(events, call):
        kind = ev.get("type", name)
        if kind == "response.output_text.delta":
            if call.first_token_index is None:
                call.first_token_index = i
            deltas.append(ev.get("delta", ""))
        elif kind in ("response.completed", "response.incomplete", "response.failed"):
            completed = True
            parse_response(ev.get("response") or {}, call)
        elif kind == "response.created":
            call.provider_request_id = (ev.get("response") or {}).get("id")
        elif kind == "error":
            call.error = AiError(ev.get("code"), ev.get("message"), ev.get("code"))
    call.stream_complete = completed
    if not completed:
        call.output_text = "".join(deltas)
        call.notes.append("stream ended without response.completed")
