"""Google Gemini `generateContent` / `streamGenerateContent` (Google AI and Vertex AI): request,
JSON response, SSE stream (`alt=sse`) and the default stream, one JSON array of responses."""

from __future__ import annotations

import json
import re

from analyzer.ai.calls import AiCall, AiError, Message, ToolCall, Usage, finish_reason, json_events

JSON_ARRAY_STREAM = True  # streamGenerateContent without alt=sse answers one JSON array
_MODEL = re.compile(r"/models/([^/:?]+):")
PARAMETERS = {"temperature": "temperature", "topP": "top_p", "maxOutputTokens": "max_tokens",
              "stopSequences": "stop"}


def _parts(parts) -> tuple[str, int]:
    texts, images = [], 0
    for p in parts or []:
        if isinstance(p, dict):
            if "text" in p:
                texts.append(str(p["text"]))
            elif "inlineData" in p or "fileData" in p:
                images += 1
    return "".join(texts), images


def parse_request(body: dict, call: AiCall, path: str = "") -> None:
    call.request_type = "chat"
    m = _MODEL.search(path)
    call.model_requested = m.group(1) if m else body.get("model")
    call.streaming = "streamGenerateContent" in path
    system = body.get("systemInstruction") or body.get("system_instruction")
    if isinstance(system, dict):
        text, _ = _parts(system.get("parts"))
        call.system_prompt = text
        call.messages.append(Message("system", text))
    for c in body.get("contents") or []:
        if isinstance(c, dict):
            text, images = _parts(c.get("parts"))
            call.messages.append(Message("assistant" if c.get("role") == "model" else "user", text,
                                         image_count=images))
    for tool in body.get("tools") or []:
        for fn in (tool or {}).get("functionDeclarations") or []:
            call.tools.append({"name": fn.get("name"), "description": fn.get("description")})
    config = body.get("generationConfig") or {}
    call.parameters = {ours: config[theirs] for theirs, ours in PARAMETERS.items() if theirs in config}


def _chunk(resp: dict, call: AiCall, index: int, text: list[str]) -> None:
    if "error" in resp:
        err = resp["error"] or {}
        call.error = AiError(err.get("status"), err.get("message"), str(err.get("code", "")) or None)
        return
    call.model_returned = resp.get("modelVersion") or call.model_returned
    call.provider_request_id = resp.get("responseId") or call.provider_request_id
    for cand in (resp.get("candidates") or [])[:1]:
        for p in (cand.get("content") or {}).get("parts") or []:
            if "text" in p and not p.get("thought"):
                if call.first_token_index is None:
                    call.first_token_index = index
                text.append(p["text"])
            elif "functionCall" in p:
                fc = p["functionCall"]
                call.tool_calls.append(ToolCall(fc.get("id"), fc.get("name"),
                                                json.dumps(fc.get("args", {}), sort_keys=True)))
        if cand.get("finishReason"):
            call.finish_reason = finish_reason(cand["finishReason"])
    u = resp.get("usageMetadata")
    if u:
        call.usage = Usage(u.get("promptTokenCount"), u.get("candidatesTokenCount"), u.get("totalTokenCount"),
                           u.get("cachedContentTokenCount"), u.get("thoughtsTokenCount"))


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
