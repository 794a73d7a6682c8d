"""OpenAI chat completions (`/v1/chat/completions`): request, JSON response, and SSE stream
(`chat.completion.chunk` events, with `stream_options.include_usage` usage in the last chunk).
Also used for every OpenAI-compatible server (Groq, Together, vLLM, Ollama's /v1, gateways)."""

from __future__ import annotations

import json

from analyzer.ai.calls import AiCall, AiError, Message, ToolCall, Usage, finish_reason

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
    call.model_requested = body.get("model")
    call.streaming = bool(body.get("stream"))
    for m in body.get("messages") or []:
        if not isinstance(m, dict):
            continue
        text, images = content_text(m.get("content"))
        role = m.get("role", "user")
        if role == "developer":
            role = "system"
        call.messages.append(Message(role, text, m.get("tool_call_id"), m.get("name"), images))
        if role == "system" and call.system_prompt is None:
            call.system_prompt = text
    for t in body.get("tools") or []:
        fn = t.get("function", t) if isinstance(t, dict) else {}
        call.tools.append({"name": fn.get("name"), "description": fn.get("description")})
    choice = body.get("tool_choice")
    call.tool_choice = choice if isinstance(choice, str) or choice is None else "specific"
    call.parameters = {k: body[k] for k in PARAMETERS if k in body}


def parse_usage(u: dict | None) -> Usage:
    """Token counts of an OpenAI `usage` object (chat and legacy completions share it)."""
    if not isinstance(u, dict):
        return Usage()
    details = u.get("prompt_tokens_details") or {}
    completion_details = u.get("completion_tokens_details") or {}
    return Usage(u.get("prompt_tokens"), u.get("completion_tokens"), u.get("total_tokens"),
                 details.get("cached_tokens"), completion_details.get("reasoning_tokens"))


def parse_error(body: dict, call: AiCall) -> None:
    err = body.get("error")
    if isinstance(err, dict):
        code = err.get("code")
        call.error = AiError(err.get("type"), err.get("message"), None if code is None else str(code))
    elif isinstance(err, str):
        call.error = AiError(None, err, None)


def parse_response(body: dict, call: AiCall) -> None:
    if "error" in body:
        parse_error(body, call)
        return
    call.provider_request_id = body.get("id")
    call.model_returned = body.get("model")
    choices = body.get("choices") or []
    if choices:
        first = choices[0]
        msg = first.get("message") or {}
        call.output_text, _ = content_text(msg.get("content"))
        for tc in msg.get("tool_calls") or []:
            fn = tc.get("function") or {}
            call.tool_calls.append(ToolCall(tc.get("id"), fn.get("name"), fn.get("arguments") or ""))
        call.finish_reason = finish_reason(first.get("finish_reason"))
    call.usage = parse_usage(body.get("usage"))


def parse_stream(events: list[tuple[str, str]], call: AiCall) -> None:
    """(event, data) pairs of an SSE stream, in order. `[DONE]` ends it."""
    text: list[str] = []
    calls: dict[int, ToolCall] = {}
    done = False
    for i, (_, data) in enumerate(events):
        if data.strip() == "[DONE]":
            done = True
            continue
        try:
            chunk = json.loads(data)
        except ValueError:
            call.notes.append(f"stream event {i} is not JSON")
            continue
        if not isinstance(chunk, dict):
            continue
        if "error" in chunk:
            parse_error(chunk, call)
            continue
        call.provider_request_id = call.provider_request_id or chunk.get("id")
        call.model_returned = chunk.get("model") or call.model_returned
        for choice in chunk.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            piece = delta.get("content")
            if piece:
                if call.first_token_index is None:
                    call.first_token_index = i
                text.append(piece)
            for tc in delta.get("tool_calls") or []:
                slot = calls.setdefault(tc.get("index", 0), ToolCall(None, None))
                fn = tc.get("function") or {}
                slot.id = tc.get("id") or slot.id
                slot.name = fn.get("name") or slot.name
                slot.arguments += fn.get("arguments") or ""
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
