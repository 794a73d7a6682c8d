"""Live mode reads the segment the recorder is still writing (its Arrow IPC stream, appended batch by
batch by the recorder's own InProgressSegment), so a call's events are written before the segment is
published; when it is (by the recorder's own conversion), the rows already read are skipped: every
event exactly once, byte for byte as the one-shot analyzer writes it, a restart at any point included.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from analyzer.config import AnalyzerConfig
from analyzer.live.follow import Follower, FollowOptions, list_in_progress
from analyzer.live.metrics import FollowStats
from analyzer.segments.reader import COLUMNS, ReadReport, read_stream
from conftest import HASH_KEY
from contract import segment_names
from helpers.analyzer_inputs import FIXTURES
from helpers.follow_helpers import assert_same_events, one_shot_lines, output_lines
from helpers.hostile_inputs import damage_file
from recorder.store.conversion import publish
from recorder.store.inprogress import InProgressSegment

NAME = "node-a-20261201T100000-6617c2-000001"
STEP = 7  # rows per appended batch: calls are cut across batches


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """The recorded SDK segment (several connections, HTTP/1.1 and streams) and its one-shot events."""
    src = next((FIXTURES / "segments" / "sdk").glob("*.parquet"))
    d = tmp_path_factory.mktemp("one-shot")
    return pq.read_table(src), one_shot_lines(src.parent, d)


def follower(seg: Path, out: Path) -> Follower:
    cfg = AnalyzerConfig(hash_key=HASH_KEY.read_bytes().strip())  # the key of the one-shot truth
    f = Follower(FollowOptions(seg, out, idle_seconds=0.0), cfg, FollowStats())
    f.start()
    assert f.replay(threading.Event())
    return f


def look(f: Follower) -> None:
    """One turn of live mode's loop (analyzer/live/follow.py run)."""
    for name in f.pending():
        f.process_guarded(name)
        f.checkpoint()
    read = f.read_in_progress()
    if f.drain_guarded() or read:
        f.checkpoint()


def test_events_come_before_the_segment_is_published_and_once(source, tmp_path):
    table, truth = source
    seg, out = tmp_path / "segments", tmp_path / "events.jsonl"
    seg.mkdir()
    stream = InProgressSegment(segment_names.in_progress_path(seg, NAME), table.schema)
    f = follower(seg, out)
    written_before = []
    for start in range(0, table.num_rows, STEP):
        stream.append(table.slice(start, STEP))
        look(f)
        written_before.append(len(output_lines(out)))
    assert list_in_progress(seg) == [NAME + ".parquet"]
    before_publication = output_lines(out)
    # every call complete in the stream is written before publication (the last response's events
    # too: each call's last byte arrived in some batch)
    assert_same_events(before_publication, truth)
    assert written_before[0] < written_before[-1]  # events came batch by batch, not at the end
    stream.close()
    publish(segment_names.in_progress_path(seg, NAME), NAME, {})
    look(f)
    assert f.stats.segments_processed == 1 and NAME + ".parquet" in f.processed
    assert output_lines(out) == before_publication  # the published rows read once: nothing new
    f.close()


@pytest.mark.parametrize("stop_after", [1, 4, 9])
def test_a_restart_while_the_segment_is_written_writes_each_event_once(source, tmp_path, stop_after):
    table, truth = source
    seg, out = tmp_path / "segments", tmp_path / "events.jsonl"
    seg.mkdir()
    stream = InProgressSegment(segment_names.in_progress_path(seg, NAME), table.schema)
    f = follower(seg, out)
    starts = list(range(0, table.num_rows, STEP))
    for i, start in enumerate(starts):
        stream.append(table.slice(start, STEP))
        if i < stop_after:
            look(f)
        elif i == stop_after:  # killed: the state in memory is gone, what was written and checkpointed stays
            f.out.close()
            f = follower(seg, out)
            look(f)
        else:
            look(f)
    stream.close()
    publish(segment_names.in_progress_path(seg, NAME), NAME, {})
    look(f)
    assert_same_events(output_lines(out), truth)
    f.close()


def test_a_batch_being_written_is_where_reading_stops(source, tmp_path):
    table = source[0].combine_chunks()  # each append one batch of 10 rows
    path = tmp_path / f".{NAME}.arrows.inprogress"
    stream = InProgressSegment(path, table.schema)
    stream.append(table.slice(0, 10))
    stream.append(table.slice(10, 10))
    whole = path.read_bytes()
    stream.close()
    for cut in (len(whole) - 1, len(whole) - 200, len(whole) // 2 + 3):
        path.write_bytes(whole[:cut])
        got = read_stream(path, 0, ReadReport())
        assert got.problem is None and got.rows in (0, 10)
    path.write_bytes(whole)
    got = read_stream(path, 13, ReadReport())  # the first 13 rows were read before
    assert got.rows == 20 and sum(b.num_rows for b in got.batches) == 7


@pytest.mark.parametrize("content, problem", [(b"", "unreadable"), (b"garbage" * 100, "unreadable")])
def test_a_stream_that_is_not_one_is_left_for_its_publication(tmp_path, content, problem):
    path = tmp_path / f".{NAME}.arrows.inprogress"
    path.write_bytes(content)
    got = read_stream(path, 0, ReadReport())
    assert got.batches == [] and problem in got.problem


def test_a_stream_of_another_schema_is_not_read(tmp_path):
    import pyarrow as pa

    path = tmp_path / f".{NAME}.arrows.inprogress"
    stream = InProgressSegment(path, pa.schema([("x", pa.int64())]))
    stream.append(pa.table({"x": [1, 2]}))
    stream.close()
    got = read_stream(path, 0, ReadReport())
    assert got.batches == [] and "not a segment" in got.problem


def test_segments_published_before_it_are_read_first(source, tmp_path):
    """An in-progress segment is read only once every published one before it has been: rows keep
    their segments' order."""
    table, _ = source
    seg, out = tmp_path / "segments", tmp_path / "events.jsonl"
    seg.mkdir()
    later = InProgressSegment(segment_names.in_progress_path(seg, NAME), table.schema)
    later.append(table.slice(0, 20))
    f = follower(seg, out)
    f.listing = ["node-a-20261201T095950-6617c2-000000.parquet"]  # an older one listed, not yet read
    assert f.read_in_progress() == 0 and f.partial == {}
    f.listing = []
    assert f.read_in_progress() > 0 and f.partial == {NAME + ".parquet": 20}
    later.close()
    json.dumps(f.stats.__dict__, default=str)  # the stats stay plain values
    f.close()


def test_mutated_streams_never_raise(source, tmp_path):
    """A seeded campaign of damaged in-progress streams (bytes flipped, lengths made huge, cut and
    padded with garbage): read_stream returns rows that keep the format, or a problem, never raises.
    (Found: MemoryError and OverflowError from huge lengths, ArrowInvalid from unchecked offsets in a
    batch's compute, UnicodeDecodeError from a column name; 5,000 mutants passed once they were handled.)"""
    import random

    table = source[0].combine_chunks()
    path = tmp_path / f".{NAME}.arrows.inprogress"
    stream = InProgressSegment(path, table.schema)
    for start in range(0, 60, 10):
        stream.append(table.slice(start, 10))
    stream.close()
    whole = path.read_bytes()
    rng = random.Random(20261202)
    outcomes = {"problem": 0, "rows": 0, "nothing": 0}
    for _ in range(600):
        path.write_bytes(damage_file(rng, whole))
        got = read_stream(path, rng.choice((0, 13)), ReadReport())
        for batch in got.batches:
            assert batch.schema.names[:len(COLUMNS)] == COLUMNS
        outcomes["problem" if got.problem else "rows" if got.batches else "nothing"] += 1
    assert outcomes["problem"] and outcomes["rows"], outcomes
