"""Gemini and Ollama: parsers on documented shapes, and valid OISP events through the pipeline."""

from __future__ import annotations

import json

from test_ai_events import REG, exchange

from analyzer.ai.calls import AiCall
from analyzer.ai.events import EventOptions
from analyzer.ai.gemini import parse_request as gemini_request
from analyzer.ai.gemini import parse_response as gemini_response
from analyzer.ai.gemini import parse_stream as gemini_stream
from analyzer.ai.ollama import parse_request as ollama_request
from analyzer.ai.ollama import parse_stream as ollama_stream
from analyzer.ai.pipeline import exchange_events
from analyzer.ai.schema import validation_errors

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
