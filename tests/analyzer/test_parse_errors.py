"""A parser that raises costs only its own connection or exchange: the run goes on, and the failure is
marked where a reader looks (the exchange record's parse_error and notes, the events' confidence) and
counted (the summary line, live mode's parse_errors). Failures are injected: hostile input no longer
makes any parser raise (tests/analyzer/test_fuzz_pipeline.py), which is why the boundary exists anyway."""

from __future__ import annotations

import json

from analyzer.cli import _analyze
from analyzer.config import AnalyzerConfig
from analyzer.http.http1 import Http1Connection
from helpers.analyzer_inputs import FIXTURES

SDK = sorted((FIXTURES / "segments" / "sdk").glob("*.parquet"))


def _run(tmp_path, capsys):
    xs, evs = tmp_path / "x.jsonl", tmp_path / "e.jsonl"
    assert _analyze(SDK, xs, evs, None, AnalyzerConfig(hash_key=b"k" * 32)) == 0
    records = [json.loads(line) for line in xs.read_text().splitlines()]
    events = [json.loads(line) for line in evs.read_text().splitlines()]
    return records, events, capsys.readouterr().err


def test_clean_run_has_no_parse_error(tmp_path, capsys):
    records, events, err = _run(tmp_path, capsys)
    assert records and not any("parse_error" in r for r in records)
    assert "parse error" not in err
    assert not any("parse_error" in json.dumps(ev["confidence"]) for ev in events)


def test_event_building_that_raises_marks_its_exchange(tmp_path, capsys, monkeypatch):
    from analyzer.ai import exchange_events

    def boom(*_args):
        raise TypeError("injected")

    monkeypatch.setattr(exchange_events, "_events", boom)
    records, events, err = _run(tmp_path, capsys)
    failed = [r for r in records if r.get("parse_error") == "TypeError"]
    assert failed and len(failed) == len(records)  # every exchange of the fixture is an AI call
    assert all(any(n.startswith("parse error (TypeError)") for n in r["notes"]) for r in failed)
    # the calls are still reported, from what is known, with low confidence
    assert events and all(ev["confidence"]["level"] == "low" for ev in events)
    assert all("parse_error:TypeError" in ev["confidence"]["limitations"] for ev in events)
    assert f"{len(failed)} parse error(s)" in err


def test_protocol_parser_that_raises_ends_only_its_connection(tmp_path, capsys, monkeypatch):
    calls = {"n": 0}
    original = Http1Connection.feed_response

    def flaky(self, data, ts):
        calls["n"] += 1
        if calls["n"] == 2:  # the second response chunk of the run: one connection fails mid-way
            raise AttributeError("injected")
        return original(self, data, ts)

    monkeypatch.setattr(Http1Connection, "feed_response", flaky)
    records, events, err = _run(tmp_path, capsys)
    broken = {r["conn_id"] for r in records if r.get("parse_error") == "AttributeError"}
    assert len(broken) == 1
    assert {r["conn_id"] for r in records} - broken  # the other connections are whole
    assert "1 parse error(s)" in err
    marked = [ev for ev in events if ev["attrs"]["connection_id"] in broken]
    assert marked  # what the connection finished before its parser failed is still reported
    assert all("connection_parse_error:AttributeError" in ev["confidence"]["limitations"] for ev in marked)
    assert all(ev["confidence"]["level"] == "low" for ev in marked)
