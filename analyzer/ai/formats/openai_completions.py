"""OpenAI legacy completions (`/v1/completions`): a prompt in, text out (JSON or SSE)."""

from __future__ import annotations

import json

from analyzer.ai.calls import AiCall, Message, finish_reason, json_events
from analyzer.ai.formats.json_shapes import dicts_at, str_at, truthy_str
from analyzer.ai.formats.openai_chat import PARAMETERS, parse_choices_response, parse_usage


def parse_request(body: dict, call: AiCall, path: str = "") -> None:
    call.request_type = "completion"
    call.model_requested = str_at(body, "model")
    call.streaming = bool(body.get("stream"))
    prompt = body.get("prompt")
    call.messages.append(Message("user", prompt if isinstance(prompt, str) else json.dumps(prompt)))
    call.parameters = {k: body[k] for k in PARAMETERS if k in body}


def parse_response(body: dict, call: AiCall) -> None:
    parse_choices_response(body, call, _read_text)


def _read_text(choice: dict, call: AiCall) -> None:
    call.output_text = str_at(choice, "text")


def parse_stream(events: list[tuple[str, str]], call: AiCall) -> None:
    text = []
    for i, _, chunk in json_events(events, call, done_marker=True):
        if chunk is None:
            continue
        call.model_returned = truthy_str(chunk.get("model")) or call.model_returned
        for choice in dicts_at(chunk, "choices"):
            if truthy_str(choice.get("text")):
                if call.first_token_index is None:
                    call.first_token_index = i
                text.append(choice["text"])
            if choice.get("finish_reason"):
                call.finish_reason = finish_reason(choice["finish_reason"])
        if chunk.get("usage"):
            call.usage = parse_usage(chunk["usage"])
    call.output_text = "".join(text)
