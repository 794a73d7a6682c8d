"""The Anthropic messages parser on documented request, response and stream shapes."""

from __future__ import annotations

import json

from analyzer.ai.calls import AiCall
from analyzer.ai.formats.anthropic_messages import parse_request, parse_response, parse_stream


def test_request_system_tools_and_params():
    call = AiCall()
    parse_request({"model": "claude-sonnet-4-5", "max_tokens": 1024, "stream": True,
                   "system": [{"type": "text", "text": "You are terse."}],
                   "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"},
                                                             {"type": "image", "source": {}}]}],
                   "tools": [{"name": "lookup", "description": "Look it up", "input_schema": {}}],
                   "tool_choice": {"type": "any"}, "stop_sequences": ["END"]}, call)
    assert call.system_prompt == "You are terse." and [m.role for m in call.messages] == ["system", "user"]
    assert call.messages[1].image_count == 1 and call.tools[0]["name"] == "lookup"
    assert call.tool_choice == "required" and call.parameters == {"max_tokens": 1024, "stop": ["END"]}


def test_json_response_counts_cache_tokens_as_input():
    call = AiCall()
    parse_response({"id": "msg_1", "type": "message", "model": "claude-sonnet-4-5", "stop_reason": "tool_use",
                    "content": [{"type": "text", "text": "Let me check."},
                                {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {"q": "x"}}],
                    "usage": {"input_tokens": 10, "cache_read_input_tokens": 1000,
                              "cache_creation_input_tokens": 200, "output_tokens": 30}}, call)
    assert call.output_text == "Let me check." and call.finish_reason == "tool_calls"
    assert call.tool_calls[0].arguments == '{"q": "x"}'
    u = call.usage
    assert (u.prompt_tokens, u.cached_tokens, u.completion_tokens, u.total_tokens) == (1210, 1000, 30, 1240)


def test_stream():
    events = [
        ("message_start", {"type": "message_start", "message": {
            "id": "msg_2", "model": "claude-sonnet-4-5", "usage": {"input_tokens": 25, "output_tokens": 1}}}),
        ("content_block_start", {"type": "content_block_start", "index": 0,
                                 "content_block": {"type": "text", "text": ""}}),
        ("ping", {"type": "ping"}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "text_delta", "text": "Hello"}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "text_delta", "text": ", world"}}),
        ("content_block_start", {"type": "content_block_start", "index": 1,
                                 "content_block": {"type": "tool_use", "id": "toolu_2", "name": "f"}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 1,
                                 "delta": {"type": "input_json_delta", "partial_json": "{\"a\": 1}"}}),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                           "usage": {"output_tokens": 15}}),
        ("message_stop", {"type": "message_stop"}),
    ]
    call = AiCall()
    parse_stream([(n, json.dumps(d)) for n, d in events], call)
    assert call.output_text == "Hello, world" and call.first_token_index == 3
    assert call.finish_reason == "stop" and call.tool_calls[0].arguments == '{"a": 1}'
    assert (call.usage.prompt_tokens, call.usage.completion_tokens, call.usage.total_tokens) == (25, 15, 40)
    assert call.notes == []


def test_errors():
    call = AiCall()
    parse_response({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}, call)
    assert call.error.type == "overloaded_error"
    call = AiCall()
    parse_stream([("error", json.dumps({"type": "error", "error": {"type": "api_error", "message": "x"}}))],
                 call)
    assert call.error.type == "api_error" and call.notes == []
