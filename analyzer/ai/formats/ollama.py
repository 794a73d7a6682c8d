"""Ollama's native API: `/api/chat` and `/api/generate`, JSON or NDJSON streams (streaming is the
default there: a request without `"stream": false` streams)."""

from __future__ import annotations

import json

from analyzer.ai.calls import AiCall, AiError, Message, ToolCall, Usage, finish_reason, json_events

OPTIONS = {"temperature": "temperature", "top_p": "top_p", "num_predict": "max_tokens", "stop": "stop"}


def parse_request(body: dict, call: AiCall, path: str = "") -> None:
    call.model_requested = body.get("model")
    call.streaming = body.get("stream", True) is not False
    if "messages" in body:
        call.request_type = "chat"
        for m in body.get("messages") or []:
            if isinstance(m, dict):
                call.messages.append(Message(m.get("role", "user"), m.get("content"),
                                             image_count=len(m.get("images") or [])))
                if m.get("role") == "system" and call.system_prompt is None:
                    call.system_prompt = m.get("content")
    else:
        call.request_type = "completion"
        if body.get("system"):
            call.system_prompt = body["system"]
            call.messages.append(Message("system", body["system"]))
        call.messages.append(Message("user", body.get("prompt"), image_count=len(body.get("images") or [])))
    for t in body.get("tools") or []:
        fn = (t or {}).get("function") or {}
        call.tools.append({"name": fn.get("name"), "description": fn.get("description")})
    options = body.get("options") or {}
    call.parameters = {ours: options[theirs] for theirs, ours in OPTIONS.items() if theirs in options}


def _line(obj: dict, call: AiCall, index: int, text: list[str]) -> None:
    if "error" in obj:
        call.error = AiError(None, str(obj["error"]), None)
        return
    call.model_returned = obj.get("model") or call.model_returned
    piece = (obj.get("message") or {}).get("content") if "message" in obj else obj.get("response")
    if piece:
        if call.first_token_index is None:
            call.first_token_index = index
        text.append(piece)
    for tc in (obj.get("message") or {}).get("tool_calls") or []:
        fn = tc.get("function") or {}
        args = json.dumps(fn.get("arguments", {}), sort_keys=True)
        call.tool_calls.append(ToolCall(None, fn.get("name"), args))
    if obj.get("done"):
        call.finish_reason = finish_reason(obj.get("done_reason") or "stop")
        p, c = obj.get("prompt_eval_count"), obj.get("eval_count")
        call.usage = Usage(p, c, (p or 0) + (c or 0) if p is not None or c is not None else None)


def parse_response(body: dict, call: AiCall) -> None:
    text: list[str] = []
    _line(body, call, 0, text)
    call.output_text = "".join(text)


def parse_stream(events: list[tuple[str, str]], call: AiCall) -> None:
    text: list[str] = []
    done = False
    for i, _, obj in json_events(events, call):
        _line(obj, call, i, text)
        done = done or bool(obj.get("done"))
    call.output_text = "".join(text)
    if not done and call.error is None:
        call.notes.append("stream ended before done")
