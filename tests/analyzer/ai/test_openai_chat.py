"""The OpenAI chat completions parser on documented request, response and stream shapes."""

from __future__ import annotations

import json

from analyzer.ai.calls import AiCall
from analyzer.ai.formats.openai_chat import parse_request, parse_response, parse_stream

REQUEST = {
    "model": "gpt-4o-mini", "stream": True, "stream_options": {"include_usage": True}, "temperature": 0.2,
    "messages": [
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "What is in this image?"},
                                     {"type": "image_url", "image_url": {"url": "data:..."}}]},
    ],
    "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather now"}}],
    "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
}


def test_request():
    call = AiCall()
    parse_request(REQUEST, call)
    assert call.model_requested == "gpt-4o-mini" and call.streaming
    assert call.system_prompt == "Be brief." and call.messages[0].role == "system"
    assert call.messages[1].content == "What is in this image?" and call.messages[1].image_count == 1
    assert call.tools == [{"name": "get_weather", "description": "Weather now"}]
    assert call.tool_choice == "specific" and call.parameters == {"temperature": 0.2}


def test_json_response_with_tool_calls_and_usage_details():
    body = {"id": "chatcmpl-1", "model": "gpt-4o-mini-2024-07-18", "choices": [{
        "index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant", "content": None,
        "tool_calls": [{"id": "call_1", "type": "function",
                        "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}}]}}],
        "usage": {"prompt_tokens": 50, "completion_tokens": 10, "total_tokens": 60,
                  "prompt_tokens_details": {"cached_tokens": 32},
                  "completion_tokens_details": {"reasoning_tokens": 4}}}
    call = AiCall()
    parse_response(body, call)
    assert call.provider_request_id == "chatcmpl-1" and call.model_returned == "gpt-4o-mini-2024-07-18"
    assert call.finish_reason == "tool_calls" and call.tool_calls[0].arguments == '{"city":"Oslo"}'
    u = call.usage
    assert (u.prompt_tokens, u.completion_tokens, u.total_tokens, u.cached_tokens, u.reasoning_tokens) == (
        50, 10, 60, 32, 4)


def test_stream_assembles_text_tool_calls_and_final_usage():
    chunks = [
        {"id": "c1", "model": "gpt-4o-mini", "choices": [{"index": 0, "delta": {"role": "assistant"}}]},
        {"id": "c1", "choices": [{"index": 0, "delta": {"content": "The answer"}}]},
        {"id": "c1", "choices": [{"index": 0, "delta": {"content": " is [DONE] soon."}}]},
        {"id": "c1", "choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": 0, "id": "call_9", "function": {"name": "f", "arguments": "{\"a\":"}}]}}]},
        {"id": "c1", "choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": 0, "function": {"arguments": "1}"}}]}}]},
        {"id": "c1", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
        {"id": "c1", "choices": [],
         "usage": {"prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12}},
    ]
    call = AiCall()
    parse_stream([("message", json.dumps(c)) for c in chunks] + [("message", "[DONE]")], call)
    assert call.output_text == "The answer is [DONE] soon."
    assert call.first_token_index == 1 and call.finish_reason == "stop"
    assert [(t.id, t.name, t.arguments) for t in call.tool_calls] == [("call_9", "f", '{"a":1}')]
    assert (call.usage.prompt_tokens, call.usage.completion_tokens) == (7, 5) and call.notes == []


def test_errors_and_cut_streams():
    call = AiCall()
    parse_response({"error": {"message": "Rate limit reached", "type": "requests",
                               "code": "rate_limit_exceeded"}}, call)
    assert (call.error.type, call.error.code) == ("requests", "rate_limit_exceeded")
    call = AiCall()
    half = '{"choices":[{"index":0,"delta":{"content":"half"}}]}'
    parse_stream([("message", half), ("message", "not json")], call)
    assert call.output_text == "half"
    assert call.notes == ["stream event 1 is not JSON", "stream ended without [DONE]"]
