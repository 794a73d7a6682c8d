"""One pipeline for both modes: the one-shot command and live mode write the same event lines for the
same input, byte for byte (analyzer/pipeline.py builds the events of both)."""

from __future__ import annotations

import json
import threading

from analyzer.cli import _analyze
from analyzer.config import AnalyzerConfig
from analyzer.live.follow import Follower, FollowOptions
from analyzer.live.metrics import FollowStats
from analyzer.pipeline import Pipeline
from analyzer.segments.reader import ReadReport, read_batches
from analyzer.sinks.events_jsonl import EventsFile
from analyzer.sinks.exchanges_jsonl import ExchangesFile
from analyzer.sinks.sink import Sink
from helpers.follow_helpers import make_parts

SPEC = {"sdk": 3, "sdk_more": 4}  # connections open across segments


def _config() -> AnalyzerConfig:
    # not the defaults: options built once must reach both modes
    return AnalyzerConfig(content="hash", hash_key=b"k" * 32)


def test_one_shot_and_live_mode_write_the_same_event_lines(tmp_path):
    seg = tmp_path / "segments"
    paths = make_parts(seg, SPEC)
    one_shot = tmp_path / "one-shot.jsonl"
    assert _analyze(paths, None, one_shot, None, _config()) == 0
    truth = one_shot.read_text().splitlines()

    live = tmp_path / "live.jsonl"
    follower = Follower(FollowOptions(seg, live), _config(), FollowStats())
    follower.start()
    assert follower.replay(threading.Event())
    for name in follower.pending():
        follower.process(name)
        follower.checkpoint()
    follower.close()
    lines = live.read_text().splitlines()
    assert len(truth) > 20 and any("hmac-sha256:" in line for line in truth)
    assert sorted(lines) == sorted(truth)
    assert len({json.loads(line)["event_id"] for line in lines}) == len(lines)


class _Recorder(Sink):
    wants_events = True

    def __init__(self):
        self.calls: list[str] = []

    def write_exchange(self, x):
        self.calls.append("exchange")

    def write_events(self, x, events):
        self.calls.append(f"events {len(events)}")

    def write_connection(self, info):
        self.calls.append("connection")

    def close(self) -> str:
        return "recorder closed"


def test_pipeline_hands_every_sink_the_same_exchanges(tmp_path):
    paths = make_parts(tmp_path / "segments", {"sdk": 1})
    rec = _Recorder()
    pipeline = Pipeline(AnalyzerConfig(), [rec, ExchangesFile(tmp_path / "x.jsonl"),
                                           EventsFile(tmp_path / "e.jsonl")])
    pipeline.run(read_batches(paths, ReadReport()))
    assert pipeline.close() == ["recorder closed"]
    exchanges = (tmp_path / "x.jsonl").read_text().splitlines()
    events = (tmp_path / "e.jsonl").read_text().splitlines()
    assert rec.calls.count("exchange") == len(exchanges) == pipeline.exchanges > 0
    handed = sum(int(c.split()[1]) for c in rec.calls if c.startswith("events"))
    assert handed == len(events) == pipeline.events
    assert rec.calls.count("connection") == pipeline.tracker.connections_seen


def test_the_configured_budgets_reach_the_protocol_layer(tmp_path):
    from dataclasses import replace

    from analyzer.config import AnalyzerConfig
    from analyzer.pipeline import Pipeline

    cfg = AnalyzerConfig()
    cfg.limits = replace(cfg.limits, max_open_streams=7)
    assert Pipeline(cfg, [], export=False).tracker.limits.max_open_streams == 7
