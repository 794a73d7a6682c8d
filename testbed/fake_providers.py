"""Fake AI provider endpoints (ASGI), answering with bodies shaped like the providers' documented
ones: OpenAI chat completions (JSON and SSE with usage), embeddings, Anthropic messages (JSON and
SSE), and provider-shaped errors. Deterministic: the answer is a function of the request.

Ask for model "rate-limited" to get a 429, "bad-key" to get a 401, "bad-request" to get a 400,
"server-error" a 500 (OpenAI) and "overloaded" a 529 (Anthropic); a model whose name contains "long"
answers LONG_ANSWER (about 26 KB, 3,000 words when streamed). JSON bodies over 1 KiB are
gzip-compressed when the client accepts gzip, as real servers do.

OpenAI chat and Anthropic messages also answer as the models do when a request offers `tools` and its
last message is the user's (a call of the first tool, arguments derived from the prompt), and cut the
answer at `max_tokens` words when that is fewer than the answer has (finish reason length)."""

from __future__ import annotations

import contextvars
import gzip
import json

from .asgi_app import read_body

ANSWER = "Hello from the fake provider. It says [DONE] inside the text, which is not the end."
LONG_ANSWER = " ".join(f"word{i}" for i in range(3000)) + "."
_ACCEPTS_GZIP: contextvars.ContextVar[bool] = contextvars.ContextVar("accepts_gzip", default=False)


def answer_for(model: str) -> str:
    return LONG_ANSWER if "long" in model else ANSWER


def _cut(words: list[str], req: dict) -> tuple[list[str], bool]:
    """The words within the request's token limit (one word, one token), and whether it cut them."""
    limit = req.get("max_completion_tokens") or req.get("max_tokens")
    if isinstance(limit, int) and 0 < limit < len(words):
        return words[:limit], True
    return words, False


def _tool_arguments(tool: str, prompt: object) -> str:
    """Deterministic arguments for a tool call: the tool's name and the prompt's first words."""
    text = prompt if isinstance(prompt, str) else json.dumps(prompt)
    return json.dumps({"query": " ".join(text.split()[:6]), "tool": tool})


def _wants_tool(req: dict) -> str | None:
    """The tool a model would call: the first one offered, when the user spoke last (not a tool result)."""
    tools, messages = req.get("tools") or [], req.get("messages") or []
    if not tools or not messages or messages[-1].get("role") != "user":
        return None
    content = messages[-1].get("content")
    if isinstance(content, list) and any(isinstance(b, dict) and b.get("type") == "tool_result" for b in content):
        return None
    first = tools[0]
    return (first.get("function") or {}).get("name") or first.get("name")


def _words(text: str) -> list[str]:
    out, word = [], ""
    for ch in text:
        word += ch
        if ch == " ":
            out.append(word)
            word = ""
    return out + ([word] if word else [])


async def _send(send, status: int, body: bytes | list[bytes], ctype: str, headers=()) -> None:
    hdrs = [(b"content-type", ctype.encode()), *headers]
    if isinstance(body, bytes) and len(body) > 1024 and _ACCEPTS_GZIP.get():
        body = gzip.compress(body, mtime=0)
        hdrs.append((b"content-encoding", b"gzip"))
    parts = body if isinstance(body, list) else [body]
    if not isinstance(body, list):
        hdrs.append((b"content-length", b"%d" % len(body)))
    await send({"type": "http.response.start", "status": status, "headers": hdrs})
    for i, part in enumerate(parts):
        await send({"type": "http.response.body", "body": part, "more_body": i < len(parts) - 1})


def _openai_error(status: int, kind: str, message: str, code: str) -> tuple[int, bytes]:
    return status, json.dumps({"error": {"message": message, "type": kind, "param": None,
                                         "code": code}}).encode()


async def openai_app(path: str, req: dict, send) -> None:
    model = req.get("model", "")
    if model == "rate-limited":
        status, body = _openai_error(429, "requests", "Rate limit reached for requests", "rate_limit_exceeded")
        await _send(send, status, body, "application/json", [(b"x-request-id", b"req_429")])
        return
    if model == "bad-key":
        status, body = _openai_error(401, "invalid_request_error", "Incorrect API key provided",
                                     "invalid_api_key")
        await _send(send, status, body, "application/json")
        return
    if model == "bad-request":
        status, body = _openai_error(400, "invalid_request_error",
                                     "'messages' must contain at least one message", "invalid_value")
        await _send(send, status, body, "application/json")
        return
    if model == "server-error":
        status, body = _openai_error(500, "server_error", "The server had an error while processing your request.",
                                     "server_error")
        await _send(send, status, body, "application/json")
        return
    if path.endswith("/embeddings"):
        inputs = req.get("input")
        inputs = inputs if isinstance(inputs, list) else [inputs]
        body = {"object": "list", "model": model, "data": [
            {"object": "embedding", "index": i, "embedding": [0.125 * (i + 1), -0.5, 0.25]}
            for i in range(len(inputs))], "usage": {"prompt_tokens": 3 * len(inputs), "total_tokens": 3 * len(inputs)}}
        await _send(send, 200, json.dumps(body).encode(), "application/json")
        return
    if path.endswith("/responses"):
        await responses_app(req, send)
        return
    if path.endswith("/completions") and "/chat/" not in path:
        words = _words(ANSWER)
        body = {"id": "cmpl-fake", "object": "text_completion", "created": 1700000000, "model": model,
                "choices": [{"text": ANSWER, "index": 0, "logprobs": None, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 4, "completion_tokens": len(words), "total_tokens": 4 + len(words)}}
        await _send(send, 200, json.dumps(body).encode(), "application/json")
        return
    prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in req.get("messages", []))
    tool = _wants_tool(req)
    if tool is not None:
        await _openai_tool_call(req, send, tool, prompt_tokens)
        return
    words, cut = _cut(_words(answer_for(model)), req)
    answer, finish = "".join(words), "length" if cut else "stop"
    usage = {"prompt_tokens": prompt_tokens, "completion_tokens": len(words),
             "total_tokens": prompt_tokens + len(words),
             "prompt_tokens_details": {"cached_tokens": 0}, "completion_tokens_details": {"reasoning_tokens": 0}}
    served = f"{model}-2024-07-18"
    if req.get("stream"):
        chunks = [{"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1700000000, "model": served,
                   "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}]
        chunks += [{"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1700000000, "model": served,
                    "choices": [{"index": 0, "delta": {"content": w}, "finish_reason": None}]} for w in words]
        chunks.append({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1700000000,
                       "model": served, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
        if (req.get("stream_options") or {}).get("include_usage"):
            chunks.append({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1700000000,
                           "model": served, "choices": [], "usage": usage})
        parts = [b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks] + [b"data: [DONE]\n\n"]
        await _send(send, 200, parts, "text/event-stream")
        return
    body = {"id": "chatcmpl-fake", "object": "chat.completion", "created": 1700000000, "model": served,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": finish}],
            "usage": usage}
    await _send(send, 200, json.dumps(body).encode(), "application/json")


async def _openai_tool_call(req: dict, send, tool: str, prompt_tokens: int) -> None:
    args = _tool_arguments(tool, req["messages"][-1].get("content"))
    usage = {"prompt_tokens": prompt_tokens, "completion_tokens": 12, "total_tokens": prompt_tokens + 12}
    served, call_id = f"{req.get('model', '')}-2024-07-18", "call_fake_0"
    if req.get("stream"):
        half = len(args) // 2  # arguments arrive in fragments, as they do from the real API
        deltas = [{"role": "assistant", "content": None, "tool_calls": [
            {"index": 0, "id": call_id, "type": "function", "function": {"name": tool, "arguments": ""}}]}]
        deltas += [{"tool_calls": [{"index": 0, "function": {"arguments": part}}]} for part in (args[:half], args[half:])]
        chunks = [{"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1700000000, "model": served,
                   "choices": [{"index": 0, "delta": d, "finish_reason": None}]} for d in deltas]
        chunks.append({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1700000000,
                       "model": served, "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]})
        if (req.get("stream_options") or {}).get("include_usage"):
            chunks.append({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1700000000,
                           "model": served, "choices": [], "usage": usage})
        parts = [b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks] + [b"data: [DONE]\n\n"]
        await _send(send, 200, parts, "text/event-stream")
        return
    message = {"role": "assistant", "content": None, "tool_calls": [
        {"id": call_id, "type": "function", "function": {"name": tool, "arguments": args}}]}
    body = {"id": "chatcmpl-fake", "object": "chat.completion", "created": 1700000000, "model": served,
            "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls"}], "usage": usage}
    await _send(send, 200, json.dumps(body).encode(), "application/json")


async def responses_app(req: dict, send) -> None:
    words = _words(ANSWER)
    model = req.get("model", "")
    usage = {"input_tokens": 12, "output_tokens": len(words), "total_tokens": 12 + len(words),
             "input_tokens_details": {"cached_tokens": 0}, "output_tokens_details": {"reasoning_tokens": 0}}
    full = {"id": "resp_fake", "object": "response", "created_at": 1700000000, "model": model + "-2025-08-07",
            "status": "completed", "parallel_tool_calls": True, "tool_choice": "auto", "tools": [],
            "output": [{"type": "message", "id": "msg_fake", "role": "assistant", "status": "completed",
                        "content": [{"type": "output_text", "text": ANSWER, "annotations": []}]}],
            "usage": usage}
    if req.get("stream"):
        item = {"type": "message", "id": "msg_fake", "role": "assistant", "status": "in_progress", "content": []}
        part = {"type": "output_text", "text": "", "annotations": []}
        where = {"item_id": "msg_fake", "output_index": 0, "content_index": 0}
        evs = [{"type": "response.created", "response": {**full, "status": "in_progress", "output": [], "usage": None}},
               {"type": "response.output_item.added", "output_index": 0, "item": item},
               {"type": "response.content_part.added", **where, "part": part}]
        evs += [{"type": "response.output_text.delta", **where, "delta": w} for w in words]
        evs += [{"type": "response.output_text.done", **where, "text": ANSWER},
                {"type": "response.content_part.done", **where, "part": {**part, "text": ANSWER}},
                {"type": "response.output_item.done", "output_index": 0, "item": full["output"][0]},
                {"type": "response.completed", "response": full}]
        evs = [{**e, "sequence_number": i} for i, e in enumerate(evs)]
        parts = [b"event: %s\ndata: %s\n\n" % (e["type"].encode(), json.dumps(e).encode()) for e in evs]
        await _send(send, 200, parts, "text/event-stream")
        return
    await _send(send, 200, json.dumps(full).encode(), "application/json")


async def anthropic_app(req: dict, send) -> None:
    model = req.get("model", "")
    if model == "rate-limited":
        body = json.dumps({"type": "error", "error": {"type": "rate_limit_error",
                                                      "message": "Number of requests has exceeded your rate limit"}})
        await _send(send, 429, body.encode(), "application/json")
        return
    if model == "overloaded":
        body = json.dumps({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
        await _send(send, 529, body.encode(), "application/json")
        return
    if model in ("bad-key", "bad-request"):
        status, kind, message = ((401, "authentication_error", "invalid x-api-key") if model == "bad-key"
                                 else (400, "invalid_request_error", "max_tokens: field required"))
        body = json.dumps({"type": "error", "error": {"type": kind, "message": message}})
        await _send(send, status, body.encode(), "application/json", [(b"request-id", b"req_fake_error")])
        return
    tool = _wants_tool(req)
    if tool is not None:
        await _anthropic_tool_use(req, send, tool)
        return
    words, cut = _cut(_words(answer_for(model)), req)
    answer, stop = "".join(words), "max_tokens" if cut else "end_turn"
    usage = {"input_tokens": 11, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 20,
             "output_tokens": len(words)}
    if req.get("stream"):
        evs = [("message_start", {"type": "message_start", "message": {
            "id": "msg_fake", "type": "message", "role": "assistant", "model": model, "content": [],
            "stop_reason": None, "usage": {**usage, "output_tokens": 1}}}),
               ("content_block_start", {"type": "content_block_start", "index": 0,
                                        "content_block": {"type": "text", "text": ""}})]
        evs += [("content_block_delta", {"type": "content_block_delta", "index": 0,
                                         "delta": {"type": "text_delta", "text": w}}) for w in words]
        evs += [("content_block_stop", {"type": "content_block_stop", "index": 0}),
                ("message_delta", {"type": "message_delta", "delta": {"stop_reason": stop},
                                   "usage": {"output_tokens": len(words)}}),
                ("message_stop", {"type": "message_stop"})]
        parts = [b"event: %s\ndata: %s\n\n" % (n.encode(), json.dumps(d).encode()) for n, d in evs]
        await _send(send, 200, parts, "text/event-stream")
        return
    body = {"id": "msg_fake", "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": answer}], "stop_reason": stop, "usage": usage}
    await _send(send, 200, json.dumps(body).encode(), "application/json")


async def _anthropic_tool_use(req: dict, send, tool: str) -> None:
    args = _tool_arguments(tool, req["messages"][-1].get("content"))
    block = {"type": "tool_use", "id": "toolu_fake_0", "name": tool, "input": json.loads(args)}
    usage = {"input_tokens": 11, "output_tokens": 12}
    if req.get("stream"):
        half = len(args) // 2
        evs = [("message_start", {"type": "message_start", "message": {
            "id": "msg_fake", "type": "message", "role": "assistant", "model": req.get("model"), "content": [],
            "stop_reason": None, "usage": {**usage, "output_tokens": 1}}}),
               ("content_block_start", {"type": "content_block_start", "index": 0,
                                        "content_block": {**block, "input": {}}})]
        evs += [("content_block_delta", {"type": "content_block_delta", "index": 0,
                                         "delta": {"type": "input_json_delta", "partial_json": part}})
                for part in (args[:half], args[half:])]
        evs += [("content_block_stop", {"type": "content_block_stop", "index": 0}),
                ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "tool_use"},
                                   "usage": {"output_tokens": 12}}),
                ("message_stop", {"type": "message_stop"})]
        parts = [b"event: %s\ndata: %s\n\n" % (n.encode(), json.dumps(d).encode()) for n, d in evs]
        await _send(send, 200, parts, "text/event-stream")
        return
    body = {"id": "msg_fake", "type": "message", "role": "assistant", "model": req.get("model"),
            "content": [block], "stop_reason": "tool_use", "usage": usage}
    await _send(send, 200, json.dumps(body).encode(), "application/json")


async def gemini_app(path: str, query: str, req: dict, send) -> None:
    model = path.split("/models/")[1].split(":")[0]
    if model == "rate-limited":
        body = {"error": {"code": 429, "message": "Resource has been exhausted (e.g. check quota).",
                          "status": "RESOURCE_EXHAUSTED"}}
        await _send(send, 429, json.dumps(body).encode(), "application/json")
        return
    words = _words(ANSWER)
    usage = {"promptTokenCount": 7, "candidatesTokenCount": len(words), "totalTokenCount": 7 + len(words)}

    def chunk(text, last):
        c = {"candidates": [{"content": {"role": "model", "parts": [{"text": text}]}, "index": 0}],
             "modelVersion": model, "responseId": "gemini-fake"}
        if last:
            c["candidates"][0]["finishReason"] = "STOP"
            c["usageMetadata"] = usage
        return c

    if ":streamGenerateContent" in path:
        parts = [b"data: " + json.dumps(chunk(w, i == len(words) - 1)).encode() + b"\r\n\r\n"
                 for i, w in enumerate(words)]
        if "alt=sse" in query:
            await _send(send, 200, parts, "text/event-stream")
        else:
            await _send(send, 200, json.dumps([chunk(w, i == len(words) - 1) for i, w in enumerate(words)])
                        .encode(), "application/json")
        return
    await _send(send, 200, json.dumps(chunk(ANSWER, True)).encode(), "application/json")


def _eventstream(name: str, payload: dict) -> bytes:
    from analyzer.http.aws_eventstream import encode

    return encode({":event-type": name, ":content-type": "application/json", ":message-type": "event"},
                  json.dumps(payload).encode())


async def bedrock_app(path: str, req: dict, send) -> None:
    if path.endswith("/invoke"):  # InvokeModel with an Anthropic body answers an Anthropic message
        await anthropic_app({**req, "model": path.split("/model/")[1].split("/")[0]}, send)
        return
    words = _words(ANSWER)
    usage = {"inputTokens": 9, "outputTokens": len(words), "totalTokens": 9 + len(words)}
    if path.endswith("/converse-stream"):
        frames = [_eventstream("messageStart", {"role": "assistant"})]
        frames += [_eventstream("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": w}}) for w in words]
        frames += [_eventstream("contentBlockStop", {"contentBlockIndex": 0}),
                   _eventstream("messageStop", {"stopReason": "end_turn"}),
                   _eventstream("metadata", {"usage": usage, "metrics": {"latencyMs": 12}})]
        await _send(send, 200, frames, "application/vnd.amazon.eventstream")
        return
    body = {"output": {"message": {"role": "assistant", "content": [{"text": ANSWER}]}}, "stopReason": "end_turn",
            "usage": usage, "metrics": {"latencyMs": 12}}
    await _send(send, 200, json.dumps(body).encode(), "application/json")


async def cohere_app(req: dict, send) -> None:
    words = _words(ANSWER)
    usage = {"billed_units": {"input_tokens": 5, "output_tokens": len(words)},
             "tokens": {"input_tokens": 70, "output_tokens": len(words)}}
    if req.get("stream"):
        evs = [{"type": "message-start", "id": "cohere-fake", "delta": {"message": {"role": "assistant"}}}]
        evs += [{"type": "content-delta", "index": 0, "delta": {"message": {"content": {"text": w}}}} for w in words]
        evs += [{"type": "message-end", "delta": {"finish_reason": "COMPLETE", "usage": usage}}]
        parts = [b"event: %s\ndata: %s\n\n" % (e["type"].encode(), json.dumps(e).encode()) for e in evs]
        await _send(send, 200, parts, "text/event-stream")
        return
    body = {"id": "cohere-fake", "finish_reason": "COMPLETE", "usage": usage,
            "message": {"role": "assistant", "content": [{"type": "text", "text": ANSWER}]}}
    await _send(send, 200, json.dumps(body).encode(), "application/json")


async def ollama_app(path: str, req: dict, send) -> None:
    words = _words(ANSWER)
    model = req.get("model")
    final = {"model": model, "created_at": "2026-01-01T00:00:00Z", "done": True, "done_reason": "stop",
             "prompt_eval_count": 26, "eval_count": len(words)}
    key = "message" if path == "/api/chat" else "response"

    def piece(w):
        return {"role": "assistant", "content": w} if key == "message" else w

    if req.get("stream", True):
        lines = [{"model": model, "created_at": "2026-01-01T00:00:00Z", key: piece(w), "done": False} for w in words]
        lines.append({**final, key: piece("")})
        await _send(send, 200, [json.dumps(line).encode() + b"\n" for line in lines], "application/x-ndjson")
        return
    await _send(send, 200, json.dumps({**final, key: piece(ANSWER)}).encode(), "application/json")


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            await send({"type": msg["type"] + ".complete"})
            if msg["type"] == "lifespan.shutdown":
                return
    raw = await read_body(receive)
    try:
        req = json.loads(raw or b"{}")
    except ValueError:
        req = {}
    _ACCEPTS_GZIP.set(b"gzip" in dict(scope["headers"]).get(b"accept-encoding", b""))
    path = scope["path"]
    host = dict(scope["headers"]).get(b"host", b"").decode()
    if "generativelanguage" in host:
        await gemini_app(path, scope["query_string"].decode(), req, send)
    elif "bedrock-runtime" in host:
        await bedrock_app(path, req, send)
    elif "cohere" in host:
        await cohere_app(req, send)
    elif path.startswith("/api/"):
        await ollama_app(path, req, send)
    elif path.startswith("/v1/messages"):
        await anthropic_app(req, send)
    elif path.startswith("/v1/"):
        await openai_app(path, req, send)
    elif path == "/health" or path.startswith("/static/"):  # not AI: must produce no AI event
        await _send(send, 200, b'{"status":"ok"}', "application/json")
    else:
        await _send(send, 404, b"not found", "text/plain")
