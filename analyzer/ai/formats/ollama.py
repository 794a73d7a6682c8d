"""Ollama's native API: `/api/chat` and `/api/generate`, JSON or NDJSON streams (streaming is the
default there: a request without `"stream": false` streams)."""

from __future__ import annotations

import json

from analyzer.ai.calls import AiCall, AiError, Message, ToolCall, Usage, finish_reason, json_events, tool_info
from analyzer.ai.formats.json_shapes import at, dict_at, dicts_at, int_at, list_at, str_at, truthy_str

OPTIONS = {"temperature": "temperature", "top_p": "top_p", "num_predict": "max_tokens", "stop": "stop"}


def parse_request(body: dict, call: AiCall, path: str = "") -> None:
    call.model_requested = str_at(body, "model")
    call.streaming = body.get("stream", True) is not False
    if "messages" in body:
        call.request_type = "chat"
        for m in dicts_at(body, "messages"):
            role = str_at(m, "role") or "user"
            call.messages.append(Message(role, str_at(m, "content"),
                                         image_count=len(list_at(m, "images"))))
            if role == "system" and call.system_prompt is None:
                call.system_prompt = str_at(m, "content")
    else:
        call.request_type = "completion"
        system = str_at(body, "system")
        if system:
            call.system_prompt = system
            call.messages.append(Message("system", system))
        images = len(list_at(body, "images"))
        call.messages.append(Message("user", str_at(body, "prompt"), image_count=images))
    for t in dicts_at(body, "tools"):
        call.tools.append(tool_info(t.get("function")))
    options = dict_at(body, "options") or {}
    call.parameters = {ours: options[theirs] for theirs, ours in OPTIONS.items() if theirs in options}


def _line(obj: dict, call: AiCall, index: int, text: list[str]) -> None:
    if "error" in obj:
        call.error = AiError(None, str(obj["error"]), None)
        return
    call.model_returned = truthy_str(obj.get("model")) or call.model_returned
    piece = at(obj, "message", "content") if "message" in obj else obj.get("response")
    if piece and isinstance(piece, str):
        if call.first_token_index is None:
            call.first_token_index = index
        text.append(piece)
    for tc in dicts_at(obj, "message", "tool_calls"):
        fn = dict_at(tc, "function") or {}
        args = json.dumps(fn.get("arguments", {}), sort_keys=True)
        call.tool_calls.append(ToolCall(None, str_at(fn, "name"), args))
    if obj.get("done"):
        call.finish_reason = finish_reason(obj.get("done_reason") or "stop")
        p, c = int_at(obj, "prompt_eval_count"), int_at(obj, "eval_count")
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
