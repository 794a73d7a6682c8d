"""Gemini and Ollama: parsers on documented shapes, and valid OISP events through the pipeline."""

from __future__ import annotations

import json

from analyzer.ai.calls import AiCall
from analyzer.ai.events import EventOptions
from analyzer.ai.exchange_events import exchange_events
from analyzer.ai.formats.gemini import parse_request as gemini_request
from analyzer.ai.formats.gemini import parse_response as gemini_response
from analyzer.ai.formats.gemini import parse_stream as gemini_stream
from analyzer.ai.formats.ollama import parse_request as ollama_request
from analyzer.ai.formats.ollama import parse_stream as ollama_stream
from analyzer.ai.schema import validation_errors
from helpers.exchanges import REG, exchange

GEMINI_REQ = {"systemInstruction": {"parts": [{"text": "Answer in French."}]},
              "contents": [{"role": "user", "parts": [{"text": "Hello"},
                                                      {"inlineData": {"mimeType": "image/png"}}]},
                           {"role": "model", "parts": [{"text": "Bonjour"}]},
                           {"role": "user", "parts": [{"text": "Weather?"}]}],
              "tools": [{"functionDeclarations": [{"name": "weather", "description": "Now"}]}],
              "generationConfig": {"temperature": 0.1, "maxOutputTokens": 64}}


def gemini_chunk(text, finish=None, usage=None):
    c = {"candidates": [{"content": {"role": "model", "parts": [{"text": text}]}, "index": 0}],
         "modelVersion": "gemini-2.5-flash", "responseId": "resp-1"}
    if finish:
        c["candidates"][0]["finishReason"] = finish
    if usage:
        c["usageMetadata"] = usage
    return c


USAGE = {"promptTokenCount": 9, "candidatesTokenCount": 4, "totalTokenCount": 15, "thoughtsTokenCount": 2}


def test_gemini_request_and_both_stream_forms():
    call = AiCall()
    gemini_request(GEMINI_REQ, call, "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse")
    assert call.model_requested == "gemini-2.5-flash" and call.streaming
    assert [m.role for m in call.messages] == ["system", "user", "assistant", "user"]
    assert call.messages[1].image_count == 1 and call.tools[0]["name"] == "weather"
    assert call.parameters == {"temperature": 0.1, "max_tokens": 64}
    chunks = [gemini_chunk("Il fait "), gemini_chunk("beau.", "STOP", USAGE)]
    sse = AiCall()
    gemini_stream([("message", json.dumps(c)) for c in chunks], sse)
    array = AiCall()
    gemini_response(chunks, array)  # the default stream: one JSON array
    for got in (sse, array):
        assert got.output_text == "Il fait beau." and got.finish_reason == "stop"
        assert (got.usage.prompt_tokens, got.usage.completion_tokens, got.usage.reasoning_tokens) == (9, 4, 2)
        assert got.model_returned == "gemini-2.5-flash" and got.provider_request_id == "resp-1"


def test_gemini_events_validate():
    chunks = [gemini_chunk("Il fait "), gemini_chunk("beau.", "STOP", USAGE)]
    path = "/v1beta/models/gemini-2.5-flash:streamGenerateContent"
    x = exchange("generativelanguage.googleapis.com", path, GEMINI_REQ, json.dumps(chunks).encode(),
                 headers=[("x-goog-api-key", "AIzaSyCANARY-0123456789")])
    req, resp = exchange_events(x, REG, EventOptions())
    assert validation_errors(req) == [] and validation_errors(resp) == []
    assert req["data"]["provider"]["name"] == "google" and req["data"]["model"]["id"] == "gemini-2.5-flash"
    assert resp["data"]["choices"][0]["message"]["content"] == "Il fait beau."
    assert "CANARY-0123456789" not in json.dumps([req, resp])


def test_ollama_ndjson_stream_through_the_pipeline():
    body = {"model": "llama3.2", "messages": [{"role": "user", "content": "Hi"}],
            "options": {"num_predict": 20}}
    call = AiCall()
    ollama_request(body, call)
    assert call.streaming and call.parameters == {"max_tokens": 20}  # Ollama streams unless told not to
    lines = [{"model": "llama3.2", "message": {"role": "assistant", "content": w}, "done": False}
             for w in ("Hel", "lo")]
    lines.append({"model": "llama3.2", "message": {"role": "assistant", "content": ""}, "done": True,
                  "done_reason": "stop", "prompt_eval_count": 26, "eval_count": 2})
    ollama_stream([("ndjson", json.dumps(line)) for line in lines], call)
    assert call.output_text == "Hello" and call.usage.total_tokens == 28 and call.notes == []
    x = exchange("localhost:11434", "/api/chat", body,
                 b"".join(json.dumps(line).encode() + b"\n" for line in lines), "application/x-ndjson")
    req, resp = exchange_events(x, REG, EventOptions())
    assert validation_errors(req) == [] and validation_errors(resp) == []
    assert req["data"]["provider"]["name"] == "ollama" and resp["data"]["usage"]["completion_tokens"] == 2
    assert resp["data"]["choices"][0]["message"]["content"] == "Hello"


def test_openai_responses_api_json_and_stream():
    body = {"model": "gpt-5-mini", "instructions": "Be exact.", "stream": True, "max_output_tokens": 50,
            "input": [{"role": "user", "content": [{"type": "input_text", "text": "2+2?"}]}],
            "tools": [{"type": "function", "name": "calc", "description": "Calculator"}]}
    final = {"id": "resp_1", "model": "gpt-5-mini-2025-08-07", "status": "completed",
             "output": [{"type": "reasoning", "summary": []},
                        {"type": "message", "content": [{"type": "output_text", "text": "4"}]}],
             "usage": {"input_tokens": 20, "output_tokens": 9, "total_tokens": 29,
                       "input_tokens_details": {"cached_tokens": 0},
                       "output_tokens_details": {"reasoning_tokens": 8}}}
    events = [("response.created", {"type": "response.created", "response": {"id": "resp_1"}}),
              ("response.output_text.delta", {"type": "response.output_text.delta", "delta": "4"}),
              ("response.completed", {"type": "response.completed", "response": final})]
    sse = b"".join(b"event: %s\ndata: %s\n\n" % (n.encode(), json.dumps(d).encode()) for n, d in events)
    x = exchange("api.openai.com", "/v1/responses", body, sse, "text/event-stream")
    req, resp = exchange_events(x, REG, EventOptions())
    assert validation_errors(req) == [] and validation_errors(resp) == []
    assert req["data"]["has_system_prompt"] and req["data"]["parameters"] == {"max_tokens": 50}
    d = resp["data"]
    assert d["choices"][0]["message"]["content"] == "4" and d["finish_reason"] == "stop"
    assert d["usage"]["reasoning_tokens"] == 8 and d["model"]["id"] == "gpt-5-mini-2025-08-07"


def test_openai_legacy_completions():
    body = {"model": "gpt-3.5-turbo-instruct", "prompt": "Say this is a test", "max_tokens": 7}
    resp = {"id": "cmpl-1", "model": "gpt-3.5-turbo-instruct", "choices": [
        {"text": "\n\nThis is a test.", "index": 0, "finish_reason": "length"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}}
    req_ev, resp_ev = exchange_events(exchange("api.openai.com", "/v1/completions", body,
                                               json.dumps(resp).encode()), REG, EventOptions())
    assert req_ev["data"]["request_type"] == "completion" and validation_errors(resp_ev) == []
    assert resp_ev["data"]["finish_reason"] == "length" and resp_ev["data"]["usage"]["total_tokens"] == 12


def test_cohere_v2_chat_stream_and_error():
    body = {"model": "command-a-03-2025", "stream": True, "messages": [
        {"role": "system", "content": "Short."}, {"role": "user", "content": "Hi"}]}
    start = {"type": "message-start", "id": "c-1", "delta": {"message": {"role": "assistant"}}}
    events = [("message-start", start),
              ("content-delta", {"type": "content-delta", "index": 0,
                                 "delta": {"message": {"content": {"text": "Hel"}}}}),
              ("content-delta", {"type": "content-delta", "index": 0,
                                 "delta": {"message": {"content": {"text": "lo"}}}}),
              ("message-end", {"type": "message-end", "delta": {
                  "finish_reason": "COMPLETE",
                  "usage": {"tokens": {"input_tokens": 12, "output_tokens": 2}}}})]
    sse = b"".join(b"event: %s\ndata: %s\n\n" % (n.encode(), json.dumps(d).encode()) for n, d in events)
    req, resp = exchange_events(exchange("api.cohere.com", "/v2/chat", body, sse, "text/event-stream"), REG,
                                EventOptions())
    assert req["data"]["provider"]["name"] == "cohere" and validation_errors(resp) == []
    assert resp["data"]["choices"][0]["message"]["content"] == "Hello"
    assert resp["data"]["usage"]["total_tokens"] == 14 and resp["data"]["finish_reason"] == "stop"
    err = exchange("api.cohere.com", "/v2/chat", {**body, "stream": False},
                   json.dumps({"id": "e-1", "message": "invalid api token"}).encode(), status=401)
    _, resp = exchange_events(err, REG, EventOptions())
    assert resp["data"]["error"]["message"] == "invalid api token" and resp["data"]["success"] is False


def test_bedrock_converse_stream_eventstream_and_invoke_model():
    import base64

    from analyzer.http.aws_eventstream import EventStreamError, decode, encode

    body = {"messages": [{"role": "user", "content": [{"text": "Hi"}]}], "system": [{"text": "Short."}],
            "inferenceConfig": {"maxTokens": 64, "temperature": 0.3}}
    frames = [("messageStart", {"role": "assistant"}), ("contentBlockDelta", {"delta": {"text": "Hel"}}),
              ("contentBlockDelta", {"delta": {"text": "lo"}}), ("messageStop", {"stopReason": "end_turn"}),
              ("metadata", {"usage": {"inputTokens": 8, "outputTokens": 2, "totalTokens": 10}})]
    headers = {":message-type": "event", ":content-type": "application/json"}
    stream = b"".join(encode({":event-type": n, **headers}, json.dumps(d).encode()) for n, d in frames)
    msgs, rest = decode(stream[:-5])  # the last frame is cut: four whole ones, the rest kept
    assert [m.event_type for m in msgs] == [n for n, _ in frames[:4]] and 0 < len(rest) < len(stream)
    corrupt = bytearray(stream)
    corrupt[20] ^= 0xFF
    try:
        decode(bytes(corrupt))
        raise AssertionError("a corrupt frame was accepted")
    except EventStreamError as exc:
        assert "CRC" in str(exc)
    path = "/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse-stream"
    x = exchange("bedrock-runtime.us-east-1.amazonaws.com", path, body, stream,
                 "application/vnd.amazon.eventstream")
    req, resp = exchange_events(x, REG, EventOptions())
    assert validation_errors(req) == [] and validation_errors(resp) == []
    assert req["data"]["provider"]["name"] == "aws_bedrock" and req["data"]["streaming"]
    assert req["data"]["model"]["id"] == "anthropic.claude-3-haiku-20240307-v1:0"
    assert resp["data"]["choices"][0]["message"]["content"] == "Hello"
    assert resp["data"]["usage"]["total_tokens"] == 10 and resp["data"]["finish_reason"] == "stop"

    # InvokeModelWithResponseStream: Anthropic events, base64 inside "chunk" events
    start = {"type": "message_start", "message": {"id": "m", "model": "claude", "usage": {"input_tokens": 3}}}
    inner = [start,
             {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Yo"}},
             {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 1}},
             {"type": "message_stop"}]
    chunk = {":event-type": "chunk", ":message-type": "event"}
    stream = b"".join(encode(chunk, json.dumps({"bytes": base64.b64encode(json.dumps(e).encode()).decode()})
                             .encode()) for e in inner)
    anthropic_body = {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 10,
                      "messages": [{"role": "user", "content": "Hey"}]}
    path = "/model/anthropic.claude-3-haiku-20240307-v1%3A0/invoke-with-response-stream"
    x = exchange("bedrock-runtime.eu-west-1.amazonaws.com", path, anthropic_body, stream,
                 "application/vnd.amazon.eventstream")
    req, resp = exchange_events(x, REG, EventOptions())
    assert validation_errors(resp) == [] and resp["data"]["choices"][0]["message"]["content"] == "Yo"
    assert resp["data"]["usage"]["total_tokens"] == 4


def test_key_in_the_query_string_never_reaches_an_output():
    from analyzer.sinks.exchanges_jsonl import exchange_to_dict

    path = "/v1beta/models/gemini-2.5-flash:generateContent?key=AIzaSyQUERYCANARY123456&alt=json"
    x = exchange("generativelanguage.googleapis.com", path, GEMINI_REQ,
                 json.dumps(gemini_chunk("ok", "STOP", USAGE)).encode())
    events = exchange_events(x, REG, EventOptions())
    out = json.dumps(events) + json.dumps(exchange_to_dict(x))
    assert "QUERYCANARY" not in out
    assert events[0]["data"]["provider"]["endpoint"].endswith("?key=[redacted]&alt=json")
