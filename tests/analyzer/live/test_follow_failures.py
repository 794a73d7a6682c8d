"""Live mode when a segment breaks it: a segment whose analysis raises is set aside (counted, logged
once, checkpointed as failed, never read again) and later events still arrive, exactly once across
restarts; a segment whose analysis hangs makes /healthz and /ready fail after analyzer.stall_seconds.
No segment raises by itself any more, so the failures are injected (monkeypatch in process, a
wrapper around the CLI in a subprocess)."""

from __future__ import annotations

import json
import logging
import math
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import yaml

from analyzer import config as analyzer_config
from analyzer.config import AnalyzerConfig, AnalyzerConfigError
from analyzer.live import follow
from analyzer.live.follow import Follower, FollowOptions
from analyzer.live.metrics import FollowMetrics, FollowStats
from conftest import HASH_KEY
from contract.metrics_server import MetricsServer
from helpers.follow_helpers import (
    make_parts,
    one_shot_lines,
    output_lines,
    processed,
    publish,
    read_checkpoint,
    start_follow,
    wait_for,
)

SPEC = {"sdk": 4, "sdk_more": 5}
POISON = 1  # the second part of sdk: connections of the first are open across it


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    """The parts, and the one-shot events of the sdk_more parts alone: connections that begin after
    the poisoned segment, whose events must all arrive as they would without it."""
    d = tmp_path_factory.mktemp("parts")
    paths = make_parts(d / "segments", SPEC)
    later = d / "later"
    later.mkdir()
    for p in paths[SPEC["sdk"]:]:
        publish(p, later)
    return paths, one_shot_lines(later, d)


def poison(monkeypatch, name: str) -> list[str]:
    """Reading the segment `name` raises after its first batch was analyzed; the names read, in order."""
    real, reads = follow.read_batches, []

    def read_batches(files, report, skip_rows=0):
        reads.append(files[0].name)
        for batch in real(files, report, skip_rows):
            yield batch
            if files[0].name == name:
                raise RuntimeError("poisoned\nsegment")

    monkeypatch.setattr(follow, "read_batches", read_batches)
    return reads


def follower(seg: Path, out: Path) -> Follower:
    # the key of one_shot_lines (conftest.GOLDEN_KEY_ARGS): events are compared byte for byte
    cfg = AnalyzerConfig(hash_key=HASH_KEY.read_bytes().strip())
    f = Follower(FollowOptions(seg, out, output_keep=50), cfg, FollowStats())
    f.start()
    assert f.replay(threading.Event())
    return f


def run_all(f: Follower, checkpoint_last: bool = True) -> None:
    names = f.pending()
    for name in names:
        f.process_guarded(name)
        if checkpoint_last or name != names[-1]:
            f.checkpoint()


def assert_once(lines: list[str]) -> None:
    ids = Counter(json.loads(line)["event_id"] for line in lines)
    assert [i for i, n in ids.items() if n > 1] == [], "events written twice"


def published(paths: list[Path], seg: Path) -> None:
    seg.mkdir(parents=True)
    for p in paths:
        publish(p, seg)


def test_poisoned_segment_is_set_aside_and_later_events_arrive(parts, tmp_path, monkeypatch, caplog):
    paths, later = parts
    reads = poison(monkeypatch, paths[POISON].name)
    seg, out = tmp_path / "segments", tmp_path / "events.jsonl"
    published(paths, seg)
    caplog.set_level(logging.INFO, logger="oisp.analyze")
    f = follower(seg, out)
    names = f.pending()
    for name in names[:POISON]:
        f.process_guarded(name)
        f.checkpoint()
    assert read_checkpoint(out)["open"], "no connection open across the poisoned segment"
    before = output_lines(out)
    assert f.process_guarded(names[POISON]) is False
    f.checkpoint()
    for name in names[POISON + 1:]:
        assert f.process_guarded(name)
        f.checkpoint()
    f.close()
    lines = output_lines(out)
    assert_once(lines)
    assert lines[:len(before)] == before
    assert set(later) <= set(lines) and len(later) > 10
    assert f.stats.segments_failed == 1 and f.stats.connections_dropped >= 1
    assert f.stats.segments_processed == len(paths) - 1
    cp = read_checkpoint(out)
    assert cp["failed"] == [paths[POISON].name] and set(cp["processed"]) == {p.name for p in paths}
    # logged once, on one line, without a traceback
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and not errors[0].exc_info
    message = errors[0].getMessage()
    assert paths[POISON].name in message and "RuntimeError: poisoned segment" in message
    # a restart reads nothing again: the poisoned segment is done
    g = follower(seg, out)
    assert g.pending() == []
    g.close()
    assert output_lines(out) == lines
    assert reads.count(paths[POISON].name) == 1


@pytest.mark.parametrize("restart", ["after_its_checkpoint", "killed_before_its_checkpoint", "at_the_end"])
def test_restart_around_a_poisoned_segment_writes_nothing_twice(parts, tmp_path, monkeypatch, restart):
    """A restart makes what an uninterrupted run makes: the same events, each once."""
    paths, _ = parts
    reads = poison(monkeypatch, paths[POISON].name)
    whole = tmp_path / "whole"
    published(paths, whole / "segments")
    f = follower(whole / "segments", whole / "events.jsonl")
    run_all(f)
    f.close()
    expected = output_lines(whole / "events.jsonl")

    run = tmp_path / "run"
    seg, out = run / "segments", run / "events.jsonl"
    published(paths[:POISON + 1] if restart != "at_the_end" else paths, seg)
    f = follower(seg, out)
    run_all(f, checkpoint_last=restart != "killed_before_its_checkpoint")
    f.out.flush()  # a kill: what was written stays, the checkpoint is the last one saved
    f.out.close()
    for p in paths[POISON + 1:] if restart != "at_the_end" else []:
        publish(p, seg)
    g = follower(seg, out)
    run_all(g)
    g.close()
    lines = output_lines(out)
    assert_once(lines)
    assert sorted(lines) == sorted(expected)
    assert read_checkpoint(out)["failed"] == [paths[POISON].name]
    again = restart == "killed_before_its_checkpoint"  # not checkpointed as failed: read again, once
    assert reads.count(paths[POISON].name) == 2 + again


HOOK = """
import sys
from analyzer.streams import tracker

feed = tracker.ConnectionTracker.feed


def poisoned_feed(self, batch):
    # stands for a parser bug that this segment's rows trigger
    if "poisoned" in batch.column("comm").cast("string").to_pylist():
        raise ValueError("cannot parse this")
    return feed(self, batch)


tracker.ConnectionTracker.feed = poisoned_feed
sys.argv[0] = "oisp-analyze"
from analyzer.cli import main
main()
"""


def corrupt(src: Path, dest: Path) -> Path:
    """A copy of the segment whose rows all name the command `poisoned`: it passes the reader's
    checks, and the hook's tracker raises on it."""
    table = pq.read_table(src)
    i = table.schema.get_field_index("comm")
    comm = pa.array(["poisoned"] * table.num_rows, pa.string()).dictionary_encode()
    table = table.set_column(i, table.schema.field(i).with_type(comm.type), comm)
    path = dest / src.name
    pq.write_table(table.replace_schema_metadata(pq.read_schema(src).metadata), path)
    assert pc.all(pc.equal(pq.read_table(path).column("comm").cast(pa.string()), "poisoned")).as_py()
    return path


def test_cli_sets_aside_a_segment_that_raises_and_does_not_loop_on_restart(parts, tmp_path, monkeypatch):
    paths, later = parts
    bad = tmp_path / "bad"
    bad.mkdir()
    poisoned = corrupt(paths[POISON], bad)
    seg, out, log = tmp_path / "segments", tmp_path / "events.jsonl", tmp_path / "analyzer.log"
    seg.mkdir()
    cfg = tmp_path / "config.yaml"
    settings = {"poll_interval_seconds": 0.05, "hash_key_file": str(HASH_KEY)}
    cfg.write_text(yaml.safe_dump({"analyzer": settings}))
    monkeypatch.setattr(sys.modules["helpers.follow_helpers"], "BIN", tmp_path)
    (tmp_path / "oisp-analyze").write_text(f"#!{sys.executable}\n{HOOK}")
    (tmp_path / "oisp-analyze").chmod(0o755)
    names = {p.name for p in paths}
    for restart in range(2):
        proc = start_follow(seg, out, log, "--config", str(cfg))
        try:
            if restart == 0:
                for p in paths:
                    publish(poisoned if p.name == poisoned.name else p, seg)
            wait_for(lambda: processed(out) == names, what="every segment processed", proc=proc)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0
        finally:
            proc.kill()
    lines = output_lines(out)
    assert_once(lines)
    assert set(later) <= set(lines)
    assert read_checkpoint(out)["failed"] == [poisoned.name]
    text = log.read_text()
    assert text.count(f"segment {poisoned.name} set aside") == 1
    assert "ValueError: cannot parse this" in text and "Traceback" not in text
    assert "1 segments set aside" in text  # the first run's summary; the restart reads nothing again


def get(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_a_hanging_segment_fails_the_health_check_after_the_stall_timeout(parts, tmp_path, monkeypatch):
    paths, _ = parts
    entered, release = threading.Event(), threading.Event()
    real = follow.read_batches

    def hanging(files, report, skip_rows=0):
        entered.set()
        release.wait(60)  # a parser loop that never ends, until the test lets it
        yield from real(files, report, skip_rows)

    monkeypatch.setattr(follow, "read_batches", hanging)
    seg, out = tmp_path / "segments", tmp_path / "events.jsonl"
    seg.mkdir()
    stats, stop = FollowStats(stall_seconds=0.2), threading.Event()
    server = MetricsServer("127.0.0.1", 0, FollowMetrics(stats).registry(), ready=stats.is_ready,
                           healthy=stats.is_healthy)
    opts = FollowOptions(seg, out, poll_seconds=0.5)  # idle waits longer than the stall timeout
    thread = threading.Thread(target=follow.run, args=(opts, AnalyzerConfig(), stats, stop))
    thread.start()
    try:
        wait_for(lambda: stats.ready and not stats.busy, what="idle")
        wait_for(lambda: time.monotonic() - stats.last_progress > 0.3, what="idle past the stall timeout")
        assert get(server.port, "/healthz") == 200 and get(server.port, "/ready") == 200  # idle: not stalled
        publish(paths[0], seg)
        assert entered.wait(30)
        wait_for(stats.stalled, what="stalled")
        assert get(server.port, "/healthz") == 503 and get(server.port, "/ready") == 503
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=10) as r:
            metrics = r.read().decode()
        assert "oisp_analyzer_stalled 1.0" in metrics
        assert "oisp_analyzer_last_progress_timestamp_seconds " in metrics
        release.set()
        wait_for(lambda: paths[0].name in processed(out), what="the segment processed")
        wait_for(lambda: not stats.stalled(), what="progress again")
        assert get(server.port, "/healthz") == 200
    finally:
        release.set()
        stop.set()
        thread.join(30)
        server.close()
    assert not thread.is_alive()


def test_metrics_server_healthz_default_and_callable():
    stats = FollowStats()
    for healthy, code in ((None, 200), (lambda: True, 200), (lambda: False, 503)):
        kwargs = {} if healthy is None else {"healthy": healthy}
        server = MetricsServer("127.0.0.1", 0, FollowMetrics(stats).registry(), **kwargs)
        try:
            assert get(server.port, "/healthz") == code
        finally:
            server.close()


@pytest.mark.parametrize("value, ok", [(2.5, True), (1, True), (0, False), (-1, False), (math.inf, False),
                                       (math.nan, False), ("300", False), (True, False)])
def test_stall_seconds_config(tmp_path, value, ok):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"analyzer": {"stall_seconds": value}}))
    if ok:
        assert analyzer_config.load(path).stall_seconds == value
    else:
        with pytest.raises(AnalyzerConfigError, match="analyzer.stall_seconds must be a positive number"):
            analyzer_config.load(path)
    assert AnalyzerConfig().stall_seconds == 300


def test_idle_drain_that_raises_ends_the_open_connections(parts, tmp_path, monkeypatch):
    paths, _ = parts
    seg, out = tmp_path / "segments", tmp_path / "events.jsonl"
    published(paths[:1], seg)
    f = follower(seg, out)
    run_all(f)
    assert f.tracker.open

    def broken(idle_before_ns):
        raise KeyError("no such stream")

    monkeypatch.setattr(f.tracker, "drain", broken)
    assert f.drain_guarded() == 1
    f.checkpoint()
    f.close()
    assert not f.tracker.open and f.stats.connections_dropped >= 1 and f.stats.segments_failed == 0
    cp = read_checkpoint(out)
    assert cp["open"] == [] and cp["failed"] == []
