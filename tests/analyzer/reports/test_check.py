"""`oisp-analyze check`: the OISP cookbook's expectations format, on the SDK fixture's events."""

from __future__ import annotations

import json
import subprocess

import pytest

from analyzer.reports.expectations import check, matches
from conftest import BIN
from helpers.analyzer_inputs import FIXTURES

EVENTS = FIXTURES / "golden" / "sdk.events.jsonl"


@pytest.mark.parametrize("value, matcher, ok", [
    (5, "*", True), (None, "*", True), (5, "> 4", True), (5, ">4", True), (5, "> 5", False),
    (5, ">= 5", True),
    (2.5, "< 3", True), (3, "<= 2.5", False), (True, "> 0", False), ("5", "> 4", False),
    ("api.openai.com", "/openai\\.com$/", True), ("x", "/^y/", False),
    ("s", "string", True), (1, "integer", True), (1.5, "integer", False), (True, "integer", False),
    ({}, "object", True), ([], "array", True), (None, "null", True), ("openai", "openai", True),
    (429, 429, True), (False, False, True), ("other", "openai", False),
])
def test_matchers(value, matcher, ok):
    assert matches(value, matcher) is ok


def events():
    return [json.loads(line) for line in EVENTS.read_text().splitlines()]


def test_check_reports_what_is_not_met():
    expected = {"minimum_events": 12, "events": [
        {"event_type": "ai.request", "required_fields": {"data.provider.name": "anthropic",
                                                         "data.streaming": True, "process.pid": "integer"}},
        {"event_type": "ai.response", "required_fields": {"data.usage.total_tokens": "> 20",
                                                          "data.status_code": 200, "data.model.id": "*"}},
        {"event_type": "ai.response", "required_fields": {"data.status_code": 429,
                                                          "data.error.code": "rate_limit_exceeded"}},
    ]}
    assert check(events(), expected) == []
    failures = check(events(), {"minimum_events": 50, "events": [
        {"event_type": "ai.response", "required_fields": {"data.usage.total_tokens": "> 10000"}},
        {"event_type": "ai.embedding", "required_fields": {}}]})
    assert failures[0] == "expected at least 50 events, found 12"
    assert "data.usage.total_tokens '> 10000' (got" in failures[1]
    assert failures[2] == "events[1]: no ai.embedding event"


def test_cli_exit_codes(tmp_path):
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"minimum_events": 2, "events": [
        {"event_type": "ai.request", "required_fields": {"data.provider.name": "openai"}}]}))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"events": [{"event_type": "ai.request",
                                           "required_fields": {"data.provider.name": "cohere"}}]}))
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    run = lambda *a: subprocess.run([str(BIN / "oisp-analyze"), "check", *map(str, a)],  # noqa: E731
                                    capture_output=True, text=True)
    ok = run(EVENTS, good)
    assert ok.returncode == 0 and "2 of 2 expectation(s) met on 12 event(s)" in ok.stdout
    fail = run(EVENTS, bad)
    assert fail.returncode == 1 and "FAIL events[0] (ai.request)" in fail.stderr and "'cohere'" in fail.stderr
    usage = run(EVENTS, broken)
    assert usage.returncode == 2 and "is not valid JSON" in usage.stderr and "Traceback" not in usage.stderr
