"""Token counts of OpenAI streams that report none are estimated with tiktoken and OpenAI's rank files
(carried by the project, checked), flagged as estimated; reported counts are never replaced or mixed."""

from __future__ import annotations

import json

import duckdb
import pytest

from analyzer.ai import token_estimate
from analyzer.ai.events import EventOptions
from analyzer.ai.exchange_events import exchange_events
from analyzer.sinks.duckdb_tables import DuckDBSink
from helpers.exchanges import REG, exchange

REQUEST = {"model": "gpt-4o", "stream": True, "messages": [{"role": "system", "content": "Be brief."},
                                                            {"role": "user", "content": "hi"}]}


def sse(obj) -> bytes:
    return b"data: " + (obj if isinstance(obj, bytes) else json.dumps(obj).encode()) + b"\n\n"


def stream(model="gpt-4o", usage=None) -> bytes:
    def chunk(delta, finish=None):
        return {"id": "c1", "object": "chat.completion.chunk", "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    body = sse(chunk({"role": "assistant", "content": ""})) + sse(chunk({"content": "Hello there"})) \
        + sse(chunk({}, "stop"))
    if usage:
        body += sse({"id": "c1", "object": "chat.completion.chunk", "model": model, "choices": [],
                     "usage": usage})
    return body + sse(b"[DONE]")


def usage_of(x) -> dict:
    events = exchange_events(x, REG, EventOptions())
    return next(e for e in events if e["event_type"] == "ai.response")["data"].get("usage", {})


@pytest.mark.parametrize("name, vocabulary", [("o200k_base", 200019), ("cl100k_base", 100277)])
def test_the_carried_rank_files_are_openais(name, vocabulary):
    enc = token_estimate.encoding_for({"o200k_base": "gpt-4o", "cl100k_base": "gpt-4"}[name])
    assert enc.name == name and enc.n_vocab == vocabulary
    assert enc.decode(enc.encode("Hello, world! Ünïcode 漢字")) == "Hello, world! Ünïcode 漢字"


def test_a_stream_without_usage_is_estimated_and_flagged():
    x = exchange("api.openai.com", "/v1/chat/completions", REQUEST, stream(), ctype="text/event-stream")
    u = usage_of(x)
    # by hand, o200k_base: "system" 1 + "Be brief." 3, "user" 1 + "hi" 1, 3 per message, 3 priming
    assert (u["prompt_tokens"], u["completion_tokens"], u["total_tokens"]) == (15, 2, 17)
    assert u["estimated"] is True and u["estimated_by"] == "tiktoken:o200k_base"
    assert u["total_cost_usd"] > 0  # priced, and flagged by the same usage object


def test_reported_usage_is_kept_and_not_flagged():
    reported = {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14}
    x = exchange("api.openai.com", "/v1/chat/completions", REQUEST, stream(usage=reported),
                 ctype="text/event-stream")
    u = usage_of(x)
    assert (u["prompt_tokens"], u["completion_tokens"], u["total_tokens"]) == (11, 3, 14)
    assert "estimated" not in u and "estimated_by" not in u


@pytest.mark.parametrize("host, model", [
    ("api.openai.com", "my-fine-tune-of-nothing"),  # a model tiktoken does not know
    ("api.openai.com", "text-davinci-003"),  # an encoding the project does not carry (p50k_base)
])
def test_no_tokenizer_no_estimate(host, model):
    x = exchange(host, "/v1/chat/completions", {**REQUEST, "model": model}, stream(model),
                 ctype="text/event-stream")
    assert "prompt_tokens" not in usage_of(x)


def test_a_failed_call_is_not_estimated():
    x = exchange("api.openai.com", "/v1/chat/completions", REQUEST, stream(), ctype="text/event-stream",
                 status=500)
    assert "prompt_tokens" not in usage_of(x)


def test_duckdb_says_which_counts_are_estimated(tmp_path):
    sink = DuckDBSink(tmp_path / "t.duckdb")
    for i, body in enumerate((stream(), stream(usage={"prompt_tokens": 11, "completion_tokens": 3,
                                                      "total_tokens": 14}))):
        x = exchange("api.openai.com", "/v1/chat/completions", REQUEST, body, ctype="text/event-stream")
        x.sequence = i + 1  # two calls on the connection
        sink.write_events(x, exchange_events(x, REG, EventOptions()))
    sink.close()
    with duckdb.connect(str(tmp_path / "t.duckdb"), read_only=True) as con:
        rows = con.execute("SELECT prompt_tokens, tokens_estimated FROM ai_calls ORDER BY 1").fetchall()
    assert rows == [(11, None), (15, True)]
