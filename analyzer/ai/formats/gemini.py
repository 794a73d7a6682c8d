"""Google Gemini `generateContent` / `streamGenerateContent` (Google AI and Vertex AI): request,
JSON response, SSE stream (`alt=sse`) and the default stream, one JSON array of responses."""

from __future__ import annotations

import json
import re

from analyzer.ai.calls import AiCall, AiError, Message, ToolCall, Usage, finish_reason, json_events, tool_info
from analyzer.ai.formats.json_shapes import dict_at, dicts_at, int_at, str_at, truthy_str

JSON_ARRAY_STREAM = True  # streamGenerateContent without alt=sse answers one JSON array
_MODEL = re.compile(r"/models/([^/:?]+):")
PARAMETERS = {"temperature": "temperature", "topP": "top_p", "maxOutputTokens": "max_tokens",
              "stopSequences": "stop"}


def _parts(parts) -> tuple[str, int]:
    texts, images = [], 0
    for p in parts if isinstance(parts, list) else []:
        if isinstance(p, dict):
            if "text" in p:
                texts.append(str(p["text"]))
            elif "inlineData" in p or "fileData" in p:
                images += 1
    return "".join(texts), images


def parse_request(body: dict, call: AiCall, path: str = "") -> None:
    call.request_type = "chat"
    m = _MODEL.search(path)
    call.model_requested = m.group(1) if m else str_at(body, "model")
    call.streaming = "streamGenerateContent" in path
    system = body.get("systemInstruction") or body.get("system_instruction")
    if isinstance(system, dict):
        text, _ = _parts(system.get("parts"))
        call.system_prompt = text
        call.messages.append(Message("system", text))
    for c in dicts_at(body, "contents"):
        text, images = _parts(c.get("parts"))
        call.messages.append(Message("assistant" if c.get("role") == "model" else "user", text,
                                     image_count=images))
    for tool in dicts_at(body, "tools"):
        for fn in dicts_at(tool, "functionDeclarations"):
            call.tools.append(tool_info(fn))
    config = dict_at(body, "generationConfig") or {}
    call.parameters = {ours: config[theirs] for theirs, ours in PARAMETERS.items() if theirs in config}


def _chunk(resp: dict, call: AiCall, index: int, text: list[str]) -> None:
    if "error" in resp:
        err = dict_at(resp, "error") or {}
        call.error = AiError(str_at(err, "status"), str_at(err, "message"), _code(err.get("code", "")))
        return
    call.model_returned = truthy_str(resp.get("modelVersion")) or call.model_returned
    call.provider_request_id = truthy_str(resp.get("responseId")) or call.provider_request_id
    cand = dict_at(resp, "candidates", 0)
    if cand is not None:
        for p in dicts_at(cand, "content", "parts"):
            if "text" in p and not p.get("thought"):
                if call.first_token_index is None:
                    call.first_token_index = index
                text.append(str(p["text"]))
            elif "functionCall" in p:
                fc = dict_at(p, "functionCall") or {}
                call.tool_calls.append(ToolCall(str_at(fc, "id"), str_at(fc, "name"),
                                                json.dumps(fc.get("args", {}), sort_keys=True)))
        if cand.get("finishReason"):
            call.finish_reason = finish_reason(cand["finishReason"])
    u = resp.get("usageMetadata")
    if u and isinstance(u, dict):
        call.usage = Usage(int_at(u, "promptTokenCount"), int_at(u, "candidatesTokenCount"),
                           int_at(u, "totalTokenCount"), int_at(u, "cachedContentTokenCount"),
                           int_at(u, "thoughtsTokenCount"), reasoning_in_completion=False)


def _code(code: object) -> str | None:
    # an error code as text ("" reads as none); Google sends numbers
    if isinstance(code, bool) or not isinstance(code, str | int):
        return None
    return str(code) or None


def parse_response(body, call: AiCall) -> None:
    text: list[str] = []
    for i, resp in enumerate(body if isinstance(body, list) else [body]):
        if isinstance(resp, dict):
            _chunk(resp, call, i, text)
    call.output_text = "".join(text)
    if isinstance(body, list):
        call.streaming = True


def parse_stream(events: list[tuple[str, str]], call: AiCall) -> None:
    text: list[str] = []
    for i, _, resp in json_events(events, call):
        _chunk(resp, call, i, text)
    call.output_text = "".join(text)
