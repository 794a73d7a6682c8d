"""OpenAI chat completions (`/v1/chat/completions`): request, JSON response, and SSE stream
(`chat.completion.chunk` events, with `stream_options.include_usage` usage in the last chunk).
Also used for every OpenAI-compatible server (Groq, Together, vLLM, Ollama's /v1, gateways)."""

from __future__ import annotations

import json
from collections.abc import Callable

from analyzer.ai.calls import AiCall, AiError, Message, ToolCall, Usage, finish_reason, json_events, tool_info
from analyzer.ai.formats.json_shapes import as_number, at, dict_at, dicts_at, int_at, str_at, truthy_str

PARAMETERS = ("temperature", "top_p", "max_tokens", "max_completion_tokens", "frequency_penalty",
              "presence_penalty", "stop", "seed", "n")


def content_text(content) -> tuple[str | None, int]:
    """Message content as text, and how many images it carried (content parts); the Responses API
    uses the same part shapes."""
    if content is None or isinstance(content, str):
        return content, 0
    if isinstance(content, list):
        texts, images = [], 0
        for part in content:
            if isinstance(part, dict):
                if part.get("type") in ("text", "input_text", "output_text"):
                    texts.append(str(part.get("text", "")))
                elif part.get("type") in ("image_url", "input_image", "image"):
                    images += 1
        return "\n".join(texts), images
    return json.dumps(content, sort_keys=True), 0


def parse_request(body: dict, call: AiCall, path: str = "") -> None:
    call.request_type = "chat"
    call.model_requested = str_at(body, "model")
    call.streaming = bool(body.get("stream"))
    for m in dicts_at(body, "messages"):
        text, images = content_text(m.get("content"))
        role = str_at(m, "role") or "user"
        role = "system" if role == "developer" else role
        call.messages.append(Message(role, text, str_at(m, "tool_call_id"), str_at(m, "name"), images))
        if role == "system" and call.system_prompt is None:
            call.system_prompt = text
    for t in dicts_at(body, "tools"):
        call.tools.append(tool_info(t.get("function", t)))
    choice = body.get("tool_choice")
    call.tool_choice = choice if isinstance(choice, str) or choice is None else "specific"
    call.parameters = {k: body[k] for k in PARAMETERS if k in body}


def parse_usage(u: object) -> Usage:
    """Token counts of an OpenAI `usage` object (chat and legacy completions share it)."""
    if not isinstance(u, dict):
        return Usage()
    return Usage(int_at(u, "prompt_tokens"), int_at(u, "completion_tokens"), int_at(u, "total_tokens"),
                 int_at(u, "prompt_tokens_details", "cached_tokens"),
                 int_at(u, "completion_tokens_details", "reasoning_tokens"))


def parse_error(body: dict, call: AiCall) -> None:
    err = body.get("error")
    if isinstance(err, dict):
        call.error = AiError(str_at(err, "type"), str_at(err, "message"), _code(err.get("code")))
    elif isinstance(err, str):
        call.error = AiError(None, err, None)


def _code(code: object) -> str | None:
    """An error code as text: providers send strings or numbers."""
    if isinstance(code, str):
        return code
    return None if as_number(code) is None else str(code)


def parse_response(body: dict, call: AiCall) -> None:
    parse_choices_response(body, call, _read_message)


def parse_choices_response(body: dict, call: AiCall, read_choice: Callable[[dict, AiCall], None]) -> None:
    """An OpenAI-style answer (chat and legacy completions): an error, or id, model, usage and the first
    choice, whose content `read_choice` reads."""
    if "error" in body:
        parse_error(body, call)
        return
    call.provider_request_id = str_at(body, "id")
    call.model_returned = str_at(body, "model")
    first = dict_at(body, "choices", 0)
    if first is not None:
        read_choice(first, call)
        call.finish_reason = finish_reason(first.get("finish_reason"))
    call.usage = parse_usage(body.get("usage"))


def _read_message(choice: dict, call: AiCall) -> None:
    msg = dict_at(choice, "message") or {}
    call.output_text, _ = content_text(msg.get("content"))
    for tc in dicts_at(msg, "tool_calls"):
        call.tool_calls.append(ToolCall(str_at(tc, "id"), str_at(tc, "function", "name"),
                                        str_at(tc, "function", "arguments") or ""))


def parse_stream(events: list[tuple[str, str]], call: AiCall) -> None:
    """(event, data) pairs of an SSE stream, in order. `[DONE]` ends it."""
    text: list[str] = []
    calls: dict[int, ToolCall] = {}
    done = False
    for i, _, chunk in json_events(events, call, done_marker=True):
        if chunk is None:
            done = True
            continue
        if "error" in chunk:
            parse_error(chunk, call)
            continue
        call.provider_request_id = call.provider_request_id or str_at(chunk, "id")
        model = chunk.get("model")
        if model and isinstance(model, str):
            call.model_returned = model
        # the json_shapes reads (dicts_at, at) spelled out: this loop runs once per streamed token
        choices = chunk.get("choices")
        for choice in choices if isinstance(choices, list) else ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta")
            if not isinstance(delta, dict):
                delta = {}
            piece = delta.get("content")
            if piece and isinstance(piece, str):
                if call.first_token_index is None:
                    call.first_token_index = i
                text.append(piece)
            tool_calls = delta.get("tool_calls")
            for tc in tool_calls if isinstance(tool_calls, list) else ():
                if not isinstance(tc, dict):
                    continue
                slot = calls.setdefault(int_at(tc, "index") or 0, ToolCall(None, None))
                slot.id = truthy_str(tc.get("id")) or slot.id
                slot.name = truthy_str(at(tc, "function", "name")) or slot.name
                slot.arguments += str_at(tc, "function", "arguments") or ""
                if call.first_token_index is None:
                    call.first_token_index = i
            if choice.get("finish_reason"):
                call.finish_reason = finish_reason(choice["finish_reason"])
        if chunk.get("usage"):
            call.usage = parse_usage(chunk["usage"])
    call.output_text = "".join(text) if text or call.first_token_index is not None else call.output_text
    call.tool_calls = [calls[k] for k in sorted(calls)]
    call.stream_complete = done
    if not done:
        call.notes.append("stream ended without [DONE]")
