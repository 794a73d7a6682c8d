"""OpenAI legacy completions (`/v1/completions`): a prompt in, text out (JSON or SSE)."""

from __future__ import annotations

import json

from analyzer.ai.calls import AiCall, Message, finish_reason
from analyzer.ai.formats.openai_chat import PARAMETERS, parse_error, parse_usage


def parse_request(body: dict, call: AiCall, path: str = "") -> None:
    call.request_type = "completion"
    call.model_requested = body.get("model")
    call.streaming = bool(body.get("stream"))
    prompt = body.get("prompt")
    call.messages.append(Message("user", prompt if isinstance(prompt, str) else json.dumps(prompt)))
    call.parameters = {k: body[k] for k in PARAMETERS if k in body}


def parse_response(body: dict, call: AiCall) -> None:
    if "error" in body:
        parse_error(body, call)
        return
    call.provider_request_id = body.get("id")
    call.model_returned = body.get("model")
    choices = body.get("choices") or []
    if choices:
        call.output_text = choices[0].get("text")
        call.finish_reason = finish_reason(choices[0].get("finish_reason"))
    call.usage = parse_usage(body.get("usage"))


def parse_stream(events: list[tuple[str, str]], call: AiCall) -> None:
    text = []
    for i, (_, data) in enumerate(events):
        if data.strip() == "[DONE]":
            continue
        try:
            chunk = json.loads(data)
        except ValueError:
            call.notes.append(f"stream event {i} is not JSON")
            continue
        call.model_returned = chunk.get("model") or call.model_returned
        for choice in chunk.get("choices") or []:
            if choice.get("text"):
                if call.first_token_index is None:
                    call.first_token_index = i
                text.append(choice["text"])
            if choice.get("finish_reason"):
                call.finish_reason = finish_reason(choice["finish_reason"])
        if chunk.get("usage"):
            call.usage = parse_usage(chunk["usage"])
    call.output_text = "".join(text)
