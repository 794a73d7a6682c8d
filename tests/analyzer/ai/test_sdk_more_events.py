"""Events from real openai (Responses API, legacy completions), google-genai, boto3 (Bedrock
Converse, ConverseStream and InvokeModel), cohere and ollama clients, recorded by the real recorder
against fake providers under their real host names (scripts/record_fixtures.py sdk_more)."""

from __future__ import annotations

import json
import subprocess

from analyzer.ai.schema import validation_errors
from conftest import BIN, GOLDEN_KEY_ARGS
from helpers.analyzer_inputs import FIXTURES
from testbed.sdk_workload_more import AWS_SECRET, CANARY_KEY

SEGMENTS = FIXTURES / "segments" / "sdk_more"
TRUTH = json.loads((FIXTURES / "golden" / "sdk_more.truth.json").read_text())


def test_golden_valid_and_true_to_the_sdks(tmp_path):
    out, xs = tmp_path / "events.jsonl", tmp_path / "exchanges.jsonl"
    subprocess.run([str(BIN / "oisp-analyze"), str(SEGMENTS), "--out", str(out), "--exchanges", str(xs),
                    *GOLDEN_KEY_ARGS], check=True, capture_output=True)
    assert out.read_bytes() == (FIXTURES / "golden" / "sdk_more.events.jsonl").read_bytes()
    events = [json.loads(line) for line in out.read_text().splitlines()]
    assert all(validation_errors(e) == [] for e in events)
    reqs = [e for e in events if e["event_type"] == "ai.request"]
    resps = {e["data"]["request_id"]: e["data"] for e in events if e["event_type"] == "ai.response"}
    got = [(r["data"]["provider"]["name"], r["data"]["request_type"], r["data"]["streaming"],
            resps[r["data"]["request_id"]]["choices"][0]["message"]["content"],
            resps[r["data"]["request_id"]]["usage"]["total_tokens"]) for r in reqs]
    t = TRUTH
    invoke = t["bedrock_invoke"]["usage"]
    # events come out per connection, as connections close
    assert got == [
        ("google", "chat", False, t["gemini"]["text"], t["gemini"]["usage"]),
        ("google", "chat", True, t["gemini_stream"]["text"], t["gemini"]["usage"]),
        ("aws_bedrock", "chat", False, t["bedrock"]["text"], t["bedrock"]["usage"]["totalTokens"]),
        ("aws_bedrock", "chat", True, t["bedrock_stream"]["text"],
         t["bedrock_stream"]["usage"]["totalTokens"]),
        ("aws_bedrock", "chat", False, t["bedrock_invoke"]["text"],
         sum(invoke[k] for k in ("input_tokens", "cache_read_input_tokens", "cache_creation_input_tokens",
                                 "output_tokens"))),
        ("openai", "chat", False, t["responses"]["text"], t["responses"]["usage"]),
        ("openai", "chat", True, t["responses_stream"]["text"], t["responses_stream"]["usage"]),
        ("openai", "completion", False, t["completions"]["text"], t["completions"]["usage"]),
        ("cohere", "chat", False, t["cohere"]["text"], 70 + int(t["cohere"]["usage"])),
        ("ollama", "chat", True, t["ollama_stream"]["text"], 26 + 16),
    ]
    for path in (out, xs):
        text = path.read_text()
        assert CANARY_KEY not in text and AWS_SECRET not in text and "AKIACANARY" not in text
