"""Live mode (`oisp-analyze DIR --follow --out FILE`): segments read as they are published, connections
kept open across segments, every event written exactly once across kills and restarts, rotation, and
a checkpoint that cannot be trusted. Ground truth: the one-shot analyzer on the same segments."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from analyzer.config import AnalyzerConfig
from analyzer.live.follow import Follower, FollowOptions
from analyzer.live.metrics import FollowStats
from analyzer.segments.reader import ReadReport, read_batches
from analyzer.sinks.exchanges_jsonl import dumps
from analyzer.streams.tracker import ConnectionTracker
from conftest import BIN, HASH_KEY, REPO
from helpers.analyzer_inputs import FIXTURES
from helpers.follow_helpers import (
    assert_same_events,
    interleaved,
    make_parts,
    one_shot_lines,
    output_lines,
    processed,
    publish,
    read_checkpoint,
    split_segment,
    start_follow,
    wait_for,
)
from testbed.https_server import HttpsServer

SPEC = {"sdk": 4, "sdk_more": 5}  # AI traffic, cut so that connections span segments


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    d = tmp_path_factory.mktemp("parts")
    paths = make_parts(d / "segments", SPEC)
    return paths, one_shot_lines(d / "segments", d)


def config(tmp_path, **analyzer) -> Path:
    path = tmp_path / "config.yaml"
    # the hash key of one_shot_lines (conftest.GOLDEN_KEY_ARGS): events are compared byte for byte
    path.write_text(yaml.safe_dump({"analyzer": {"poll_interval_seconds": 0.05,
                                                 "hash_key_file": str(HASH_KEY), **analyzer}}))
    return path


def test_parts_hold_the_same_events_and_connections_span_them(parts, tmp_path):
    paths, truth = parts
    originals = tmp_path / "originals"
    originals.mkdir()
    for name in SPEC:
        for f in (FIXTURES / "segments" / name).glob("*.parquet"):
            publish(f, originals)
    assert sorted(one_shot_lines(originals, tmp_path)) == sorted(truth) and len(truth) > 20
    seen: dict[str, set[str]] = {}
    for p in paths:
        for conn in pq.read_table(p, columns=["conn_id"]).column("conn_id").drop_null().unique().to_pylist():
            seen.setdefault(conn, set()).add(p.name)
    assert sum(len(files) > 1 for files in seen.values()) >= 4


def test_segments_read_as_published(parts, tmp_path):
    paths, truth = parts
    seg, out, log = tmp_path / "segments", tmp_path / "out" / "events.jsonl", tmp_path / "analyzer.log"
    seg.mkdir()
    proc = start_follow(seg, out, log, "--config", str(config(tmp_path)))
    open_after = []
    try:
        for p in paths:
            publish(p, seg)
            wait_for(lambda p=p: p.name in processed(out), what=f"{p.name} processed", proc=proc)
            open_after.append(len(read_checkpoint(out)["open"]))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
    assert_same_events(output_lines(out), truth)
    assert any(open_after), "no connection was open between two segments: nothing spanned them"
    text = log.read_text()
    assert "received SIGTERM" in text and "stopped:" in text and "Traceback" not in text
    assert f"{paths[0].name}: " in text  # progress: one line per segment


def test_sigkill_at_every_segment_loses_and_repeats_nothing(parts, tmp_path):
    """Killed (SIGKILL) as soon as each segment starts producing output, restarted each time."""
    paths, truth = parts
    seg, out, log = tmp_path / "segments", tmp_path / "events.jsonl", tmp_path / "analyzer.log"
    seg.mkdir()
    cfg = str(config(tmp_path))
    kills = 0
    for p in paths:
        proc = start_follow(seg, out, log, "--config", cfg)
        try:
            before = out.stat().st_size if out.exists() else 0
            publish(p, seg)
            wait_for(lambda p=p, before=before: p.name in processed(out) or out.exists()
                     and out.stat().st_size > before, what="progress", proc=proc)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
    proc = start_follow(seg, out, log, "--config", cfg)
    try:
        wait_for(lambda: processed(out) == {p.name for p in paths}, what="all processed", proc=proc)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
    assert kills == len(paths)
    assert_same_events(output_lines(out), truth)


@pytest.fixture(scope="module")
def overlapping(tmp_path_factory):
    """The sdk traffic twice over, overlapping, cut in 12: connections open across every cut, and
    others that began before the oldest open one and ended after it."""
    d = tmp_path_factory.mktemp("overlapping")
    (d / "whole").mkdir()
    (d / "segments").mkdir()
    src, cut = interleaved(next((FIXTURES / "segments" / "sdk").glob("*.parquet")), d / "whole")
    paths = split_segment(src, d / "segments", 12, cuts=(cut,))
    return paths, one_shot_lines(d / "segments", d)


def _follower(seg: Path, out: Path, max_bytes: int) -> Follower:
    cfg = AnalyzerConfig(hash_key=HASH_KEY.read_bytes().strip())  # the key of the one-shot truth
    f = Follower(FollowOptions(seg, out, output_max_bytes=max_bytes, output_keep=50), cfg, FollowStats())
    f.start()
    assert f.replay(threading.Event())
    return f


@pytest.mark.parametrize("inputs, max_bytes", [("parts", 0), ("parts", 3000), ("overlapping", 0)])
def test_kill_between_write_and_checkpoint_at_every_segment(inputs, max_bytes, tmp_path, request):
    """The worst moment for a kill: events written, the last one cut in the middle of its line, the
    checkpoint not yet updated. The restart must re-read, skip what is there and repair the line.
    With rotation, the checkpoint's file has been renamed meanwhile."""
    paths, truth = request.getfixturevalue(inputs)
    replayed = skipped = cuts = 0
    for k in range(len(paths)):
        run = tmp_path / f"k{k}"
        seg, out = run / "segments", run / "events.jsonl"
        seg.mkdir(parents=True)
        for p in paths:
            publish(p, seg)
        f = _follower(seg, out, max_bytes)
        names = f.pending()
        for name in names[:k]:
            f.process(name)
            f.checkpoint()
        f.process(names[k])
        f.out.flush()  # what a kill leaves: the kernel has it, the checkpoint does not know it
        f.out.close()
        cp = read_checkpoint(out)
        # the last line cut short, if it was written after the checkpoint (a kill cannot cut others)
        after = cp["output"][1] if cp and cp["output"][0] == out.stat().st_ino else 0
        data = out.read_bytes()
        last = data.rstrip(b"\n").rfind(b"\n") + 1
        if len(data) > after and last >= after:
            out.write_bytes(data[:last + (len(data) - last) // 2])
            cuts += 1
        g = _follower(seg, out, max_bytes)
        replayed += bool(read_checkpoint(out) and read_checkpoint(out)["open"])
        for name in g.pending():
            g.process(name)
            g.checkpoint()
        g.close()
        skipped += g.stats.events_skipped
        assert_same_events(output_lines(out), truth)
        if max_bytes:
            assert Path(f"{out}.1").exists()
    assert replayed, "no restart had to re-read a connection left open"
    assert skipped, "no restart made an event that was already written"
    assert cuts, "no kill cut a line short"


def test_rotation_by_size(parts, tmp_path):
    paths, truth = parts
    full_lines = None
    ALL = {p.name for p in paths}  # noqa: N806
    for keep in (50, 2):
        run = tmp_path / f"keep{keep}"
        seg, out, log = run / "segments", run / "events.jsonl", run / "analyzer.log"
        seg.mkdir(parents=True)
        for p in paths:
            publish(p, seg)
        cfg = config(run, output_max_bytes=6000, output_keep=keep)
        proc = start_follow(seg, out, log, "--config", str(cfg))
        try:
            wait_for(lambda out=out: processed(out) == ALL, what="all processed", proc=proc)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0
        finally:
            proc.kill()
        files = sorted(run.glob("events.jsonl*"))
        for f in files:  # rotated between lines: each file under the limit, or one line alone
            assert f.stat().st_size <= 6000 or f.read_text().count("\n") == 1
        if keep == 50:
            full_lines = output_lines(out)
            assert_same_events(full_lines, truth)
            assert len(files) > 5
        else:
            assert {f.name for f in files} == {"events.jsonl", "events.jsonl.1", "events.jsonl.2"}
            kept = output_lines(out, keep=2)
            assert kept == full_lines[-len(kept):]  # the newest events, in order


@pytest.mark.parametrize("damage", ["garbage", "truncated", "wrong_version", "wrong_type"])
def test_untrustworthy_checkpoint_restarts_safely(parts, tmp_path, damage):
    """A checkpoint that cannot be trusted is set aside: every segment is read again and the events
    already in the output are not written again."""
    paths, truth = parts
    seg, out, log = tmp_path / "segments", tmp_path / "events.jsonl", tmp_path / "analyzer.log"
    seg.mkdir()
    cfg = str(config(tmp_path))
    half = len(paths) // 2
    for p in paths[:half]:
        publish(p, seg)
    proc = start_follow(seg, out, log, "--config", cfg)
    wait_for(lambda: processed(out) == {p.name for p in paths[:half]}, what="first half", proc=proc)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    written = out.read_text()
    cp_path = tmp_path / ".events.jsonl.checkpoint"
    text = cp_path.read_text()
    doc = json.loads(text)
    cp_path.write_text({
        "garbage": "\x00not json",
        "truncated": text[: len(text) // 2],
        "wrong_version": json.dumps({**doc, "version": 99}),
        "wrong_type": json.dumps({**doc, "processed": 5}),
    }[damage])
    for p in paths[half:]:
        publish(p, seg)
    proc = start_follow(seg, out, log, "--config", cfg)
    try:
        wait_for(lambda: processed(out) == {p.name for p in paths}, what="all processed", proc=proc)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
    assert out.read_text().startswith(written)
    assert_same_events(output_lines(out), truth)
    assert (tmp_path / ".events.jsonl.checkpoint.corrupt").exists()
    assert "is unusable" in log.read_text() and "Traceback" not in log.read_text()


def test_checkpoint_of_another_directory_is_refused(parts, tmp_path):
    paths, _ = parts
    a, b, out, log = tmp_path / "a", tmp_path / "b", tmp_path / "events.jsonl", tmp_path / "analyzer.log"
    a.mkdir()
    b.mkdir()
    publish(paths[0], a)
    proc = start_follow(a, out, log, "--config", str(config(tmp_path)))
    wait_for(lambda: processed(out), what="a segment processed", proc=proc)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    result = subprocess.run([str(BIN / "oisp-analyze"), str(b), "--follow", "--out", str(out)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert "belongs to segments directory" in result.stderr and "Traceback" not in result.stderr


def test_waits_for_the_segments_directory(parts, tmp_path):
    paths, _ = parts
    seg, out, log = tmp_path / "not-yet", tmp_path / "events.jsonl", tmp_path / "analyzer.log"
    proc = start_follow(seg, out, log, "--config", str(config(tmp_path)))
    try:
        wait_for(lambda: "waiting for" in log.read_text(), what="the waiting message", proc=proc)
        seg.mkdir()
        publish(paths[0], seg)
        wait_for(lambda: paths[0].name in processed(out), what="processed", proc=proc)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0


@pytest.mark.parametrize("args, message", [
    (["--follow"], "--follow needs --out FILE"),
    (["--follow", "--out", "-"], "--follow needs --out FILE"),
    (["--follow", "--out", "x.jsonl", "--duckdb", "x.db"], "writes events only"),
    (["--out", "x.jsonl", "--metrics-port", "9102"], "--metrics-port needs --follow"),
])
def test_usage_errors(tmp_path, args, message):
    result = subprocess.run([str(BIN / "oisp-analyze"), str(tmp_path), *args], capture_output=True, text=True,
                            cwd=tmp_path, timeout=30)
    assert result.returncode == 2 and message in result.stderr


@pytest.mark.parametrize("name", ["h1", "h2", "sdk", "sdk_more"])
def test_draining_finished_exchanges_early_changes_nothing(name):
    """Live mode hands out finished exchanges of open connections (HTTP/1 and HTTP/2) before they
    close: the same exchanges, byte for byte, as when they are handed out at the close."""
    files = sorted((FIXTURES / "segments" / name).glob("*.parquet"))
    whole = [dumps(x) for x in ConnectionTracker().process(read_batches(files, ReadReport()))]
    tracker, early = ConnectionTracker(), []
    for batch in read_batches(files, ReadReport()):
        for i in range(0, batch.num_rows, 3):
            early += [dumps(x) for x in tracker.feed(batch.slice(i, 3))]
            early += [dumps(x) for x in tracker.drain(idle_before_ns=1 << 62)]
    early += [dumps(x) for x in tracker.finish()]
    assert sorted(early) == sorted(whole) and whole


def test_expired_connection_that_speaks_again_numbers_on():
    """A connection ended for silence and then heard again goes on numbering its exchanges, so no
    event id is given twice."""
    files = sorted((FIXTURES / "segments" / "h1").glob("*.parquet"))
    batches = list(read_batches(files, ReadReport()))
    table_rows = sum(b.num_rows for b in batches)
    tracker, seqs = ConnectionTracker(), []
    cut = table_rows // 2
    done = 0
    for batch in batches:
        for i in range(batch.num_rows):
            seqs += [x.sequence for x in tracker.feed(batch.slice(i, 1))]
            done += 1
            if done == cut:
                first = tracker.expire(before_ns=1 << 62)
                assert first and not tracker.open
                seqs += [x.sequence for x in first]
    seqs += [x.sequence for x in tracker.finish()]
    assert len(seqs) == len(set(seqs)) and max(seqs) > max(x.sequence for x in first)


CLIENT = """
import json, os, re, socket, ssl, sys
port, ca = int(sys.argv[1]), sys.argv[2]
ctx = ssl.create_default_context(cafile=ca)
conn = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname="localhost")
body = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "say hi"}]}).encode()
conn.sendall(b"POST /v1/chat/completions HTTP/1.1\\r\\nHost: localhost:%d\\r\\nContent-Type: application/json"
             b"\\r\\nContent-Length: %d\\r\\n\\r\\n%s" % (port, len(body), body))
head = b""
while b"\\r\\n\\r\\n" not in head:
    head += conn.recv(4096)
head, rest = head.split(b"\\r\\n\\r\\n", 1)
length = int(re.search(rb"(?i)content-length: (\\d+)", head).group(1))
while len(rest) < length:
    rest += conn.recv(4096)
print(rest.decode(), flush=True)
os._exit(0)  # no SSL_free, no close row: the connection never ends in the capture
"""
ANSWER = {"id": "chatcmpl-live", "object": "chat.completion", "model": "gpt-4o-mini-2024-07-18",
          "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"},
                       "finish_reason": "stop"}],
          "usage": {"prompt_tokens": 9, "completion_tokens": 1, "total_tokens": 10}}


@pytest.mark.ebpf
def test_live_with_the_real_recorder_and_a_connection_never_closed(recorder_factory, pki, tmp_path):
    """The real recorder publishing segments every second, the live analyzer following them: a client
    that exits without closing its connection (no close row will ever come) still gets its events,
    once the connection has been idle for connection_idle_seconds."""
    rec = recorder_factory(config={"segment_max_seconds": 1})
    out, log = tmp_path / "events.jsonl", tmp_path / "analyzer.log"
    proc = start_follow(rec.segments_dir, out, log, "--config",
                        str(config(tmp_path, connection_idle_seconds=1.0, poll_interval_seconds=0.1)))
    server = HttpsServer(pki.server_context(), body_for=lambda path, body: json.dumps(ANSWER).encode())
    try:
        started = time.monotonic()
        answer = subprocess.run([sys.executable, "-c", CLIENT, str(server.port), str(pki.ca_file)], cwd=REPO,
                                capture_output=True, text=True, check=True, timeout=60).stdout
        assert json.loads(answer) == ANSWER
        peer = f"127.0.0.1:{server.port}"  # other programs on the node may make AI calls meanwhile

        def ours():
            found = [e for e in map(json.loads, out.read_text().splitlines() if out.exists() else [])
                     if e["attrs"].get("peer_address") == peer]
            return len(found) >= 2 and found

        events = wait_for(ours, timeout=60, what="the events of the call", proc=proc)
        latency = time.monotonic() - started
    finally:
        server.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    req, resp = events
    assert (req["event_type"], resp["event_type"]) == ("ai.request", "ai.response")
    assert req["data"]["messages"][0]["content"] == "say hi"
    assert resp["data"]["choices"][0]["message"]["content"] == "hi"
    assert resp["data"]["usage"]["total_tokens"] == 10
    cp = read_checkpoint(out)
    assert [c for n, c, first in cp["open"] if c == req["attrs"]["connection_id"]], "the connection ended"
    print(f"call to events written: {latency:.2f} s (segments every 1 s, idle 1 s, poll 0.1 s)")
    assert rec.stop() == 0
