"""Segments survive a kill -9, leftovers are salvaged or set aside, the quota holds, a full disk is
survived (a real tmpfs), all on real files and real processes (no eBPF needed)."""

from __future__ import annotations

import bisect
import itertools
import json
import logging
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))  # run as a script too (the killed writer)

from contract import segment_format as sf  # noqa: E402
from contract import segment_names as names  # noqa: E402
from helpers.segment_tables import segment_table  # noqa: E402
from recorder.store import publisher  # noqa: E402
from recorder.store.conversion import StreamReader  # noqa: E402
from recorder.store.inprogress import InProgressSegment  # noqa: E402
from recorder.store.salvage import salvage  # noqa: E402
from recorder.store.writer import SegmentWriter  # noqa: E402

ROWS = 50


def batch(i: int, rows: int = ROWS, size: int = 1000) -> pa.Table:
    """Batch number i: deterministic, incompressible data, every schema column present."""
    rnd = random.Random(i)
    given = {
        "kind": ["data"] * rows,
        "ts_mono_ns": [i * 1_000_000 + r for r in range(rows)],
        "conn_id": [f"conn-{i % 3}"] * rows,
        "direction": ["egress"] * rows,
        "stream_offset": [(i * rows + r) * size for r in range(rows)],
        "length": [size] * rows,
        "data": [rnd.randbytes(size) for _ in range(rows)],
    }
    return segment_table(rows, given)


def rows_of(table: pa.Table) -> list[tuple]:
    """What a reader sees of each row, whatever the dictionaries' encoding."""
    columns = ("kind", "conn_id", "stream_offset", "data")
    return list(zip(*(table[c].to_pylist() for c in columns), strict=True))


def published(directory: Path) -> pa.Table:
    """Every published segment, in name order; each must read with pyarrow."""
    files = sorted(directory.glob("*.parquet"))
    return pa.concat_tables([pq.read_table(f) for f in files]) if files else sf.SCHEMA.empty_table()


def stats_of(path: Path) -> dict:
    return json.loads(pq.read_metadata(path).metadata[sf.META_STATS])


def writer(directory: Path, **kw) -> SegmentWriter:
    kw.setdefault("max_bytes", 1 << 40)
    kw.setdefault("max_seconds", 3600)
    return SegmentWriter(directory, "node-a", "run1", {0: "/lib/libssl.so.3"}, **kw)


def child(directory: str) -> None:
    """Write batches forever; report each on stdout once `write` has returned."""
    w = writer(Path(directory), max_bytes=2_000_000)  # rotations, so conversions run when killed
    i = 0
    while True:
        w.write(batch(i, size=20_000))  # 1 MB a batch: the kill often lands inside a write
        print(i, flush=True)
        i += 1


# (a) kill -9 of a real process loses nothing that `write` had returned for

def test_kill_9_loses_no_written_batch(tmp_path, caplog):
    proc = subprocess.Popen([sys.executable, __file__, "child", str(tmp_path)], stdout=subprocess.PIPE,
                            text=True, cwd=REPO)
    reported = -1
    try:
        for line in proc.stdout:
            reported = int(line)
            if reported >= 12:  # past several rotations
                break
    finally:
        os.kill(proc.pid, signal.SIGKILL)
    reported = max([reported, *map(int, proc.stdout)])  # lines it printed before dying
    proc.wait()
    assert proc.returncode == -signal.SIGKILL

    with caplog.at_level(logging.INFO, logger="oisp.record"):
        leftovers = salvage(tmp_path)
    assert leftovers, "a killed writer leaves its in-progress stream"
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".parquet")] == []
    got = rows_of(published(tmp_path))
    written = rows_of(pa.concat_tables(batch(i, size=20_000) for i in range(reported + 1)))
    assert got[:len(written)] == written  # byte for byte, in order
    # the batch being written when the kill came is either whole or absent
    assert got[len(written):] in ([], rows_of(batch(reported + 1, size=20_000)))
    # the open stream, and up to two closed ones whose conversion was queued or running
    salvaged = [f for f in tmp_path.glob("*.parquet") if stats_of(f).get("salvaged")]
    assert 1 <= len(salvaged) <= 1 + publisher.MAX_JOBS_IN_FLIGHT
    for f in salvaged:
        assert f"salvaged {stats_of(f)['salvaged_rows']} rows" in caplog.text


# (b) leftovers: truncated, garbage, empty, old format, interrupted conversion, live

def leftover_stream(directory: Path, name: str, batches: int) -> Path:
    """An in-progress stream as a killed writer leaves it: the kernel has every appended byte."""
    seg = InProgressSegment(names.in_progress_path(directory, name), writer(directory)._schema)
    for i in range(batches):
        seg.append(batch(i))
    seg.close()
    return seg.path


def test_truncated_stream_keeps_every_complete_batch(tmp_path, caplog):
    path = leftover_stream(tmp_path, "n-1", 3)
    os.truncate(path, path.stat().st_size - 10)  # the kill cut the last batch short
    with caplog.at_level(logging.WARNING, logger="oisp.record"):
        (left,) = salvage(tmp_path)
    assert left.outcome == "published" and left.rows == 2 * ROWS
    assert left.result == tmp_path / "n-1.parquet" and not path.exists()
    assert rows_of(pq.read_table(left.result)) == rows_of(pa.concat_tables([batch(0), batch(1)]))
    assert pq.ParquetFile(left.result).num_row_groups == 1  # small batches share a row group
    stats = stats_of(left.result)
    assert stats == {"salvaged": True, "salvaged_rows": 2 * ROWS, "truncated_tail": True}
    meta = pq.read_metadata(left.result).metadata
    assert meta[sf.META_RUN] == b"run1" and json.loads(meta[sf.META_LIBRARIES]) == {"0": "/lib/libssl.so.3"}
    assert f"salvaged {2 * ROWS} rows (2 batches)" in caplog.text and "cut-short last batch" in caplog.text
    assert oct(left.result.stat().st_mode & 0o777) == "0o600"


def test_complete_stream_is_salvaged_without_truncation(tmp_path):
    leftover_stream(tmp_path, "n-1", 2)
    (left,) = salvage(tmp_path)
    assert stats_of(left.result) == {"salvaged": True, "salvaged_rows": 2 * ROWS, "truncated_tail": False}


def schema_size(schema: pa.Schema) -> int:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, schema):
        pass
    return sink.getvalue().size - 8  # without the end-of-stream marker


def test_unreadable_leftovers_are_set_aside_or_removed(tmp_path, caplog):
    garbage = names.in_progress_path(tmp_path, "n-garbage")
    garbage.write_bytes(random.Random(1).randbytes(5000))
    empty = names.in_progress_path(tmp_path, "n-empty")
    empty.write_bytes(b"")
    schema_only = leftover_stream(tmp_path, "n-schema", 1)
    os.truncate(schema_only, schema_size(writer(tmp_path)._schema) + 10)  # then a batch cut short
    with caplog.at_level(logging.WARNING, logger="oisp.record"):
        outcome = {p.path.name: p.outcome for p in salvage(tmp_path)}
    assert outcome == {garbage.name: "set_aside", empty.name: "removed", schema_only.name: "removed"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["n-garbage.corrupt"]
    assert (tmp_path / "n-garbage.corrupt").read_bytes() == random.Random(1).randbytes(5000)
    assert "cannot read leftover .n-garbage.arrows.inprogress at all" in caplog.text
    assert "renamed it to n-garbage.corrupt" in caplog.text
    assert "removed leftover .n-schema.arrows.inprogress: it held no complete batch" in caplog.text
    assert "removed leftover .n-empty.arrows.inprogress: it is empty" in caplog.text


def test_old_format_leftovers(tmp_path, caplog):
    complete = tmp_path / ".old-1.parquet.inprogress"
    pq.write_table(batch(0), complete)  # the old writer died between its footer and the rename
    footerless = tmp_path / ".old-2.parquet.inprogress"
    pq.write_table(batch(1), footerless)
    os.truncate(footerless, footerless.stat().st_size // 2)
    with caplog.at_level(logging.WARNING, logger="oisp.record"):
        outcome = {p.path.name: p.outcome for p in salvage(tmp_path)}
    assert outcome == {complete.name: "published", footerless.name: "set_aside"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old-1.parquet", "old-2.footerless.corrupt"]
    assert rows_of(pq.read_table(tmp_path / "old-1.parquet")) == rows_of(batch(0))
    assert "set aside .old-2.parquet.inprogress, an in-progress segment of the old format" in caplog.text


def test_interrupted_conversion_and_already_published_stream(tmp_path):
    # killed during a conversion: the half-written Parquet file goes, the stream is salvaged
    leftover_stream(tmp_path, "n-1", 1)
    names.converting_path(tmp_path, "n-1").write_bytes(b"PAR1 half a file")
    # killed after the rename, before the stream was removed: the stream goes
    done = leftover_stream(tmp_path, "n-2", 1)
    pq.write_table(batch(5), tmp_path / "n-2.parquet")
    orphan = names.converting_path(tmp_path, "n-3")  # a conversion whose stream is gone
    orphan.write_bytes(b"PAR1 half a file")
    outcome = {p.path.name: p.outcome for p in salvage(tmp_path)}
    assert outcome == {".n-1.arrows.inprogress": "published", done.name: "removed", orphan.name: "removed"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["n-1.parquet", "n-2.parquet"]
    assert rows_of(pq.read_table(tmp_path / "n-2.parquet")) == rows_of(batch(5))


def test_stream_of_a_live_writer_is_left_alone(tmp_path, caplog):
    w = writer(tmp_path)
    w.write(batch(0))
    with caplog.at_level(logging.WARNING, logger="oisp.record"):
        (left,) = salvage(tmp_path)
    assert left.outcome == "left" and left.path.exists()
    assert "another recorder is writing it" in caplog.text
    final = w.close()
    assert rows_of(pq.read_table(final)) == rows_of(batch(0))


# (c) quota

def test_quota_deletes_oldest_first_and_counts(tmp_path, caplog):
    one = writer(tmp_path / "probe")
    (tmp_path / "probe").mkdir()
    one.write(batch(0))
    size = one.close().stat().st_size  # one batch's segment
    w = writer(tmp_path, max_bytes=1, max_total_bytes=int(2.5 * size))  # every batch is a segment
    with caplog.at_level(logging.INFO, logger="oisp.record"):
        for i in range(6):
            w.write(batch(i))
        w.close()
    files = sorted(tmp_path.glob("node-a-*.parquet"))
    assert [f.name[-14:-8] for f in files] == ["000004", "000005"]  # the two newest
    assert rows_of(published(tmp_path)) == rows_of(pa.concat_tables([batch(4), batch(5)]))
    deleted = re.findall(r"deleted segment (\S+)", caplog.text)
    assert [d[-14:-8] for d in deleted] == ["000000", "000001", "000002", "000003"]
    c = w.counters()
    assert c["quota_deleted_segments"] == 4 and c["segments_written"] == c["segments_published"] == 6
    assert abs(c["quota_deleted_bytes"] - 4 * size) < 4 * 64  # sizes differ by a few bytes of stats
    assert "over the quota" in caplog.text
    assert 0 < stats_of(files[-1])["quota_deleted_segments"] <= 4  # counted when the file was closed


def test_quota_keeps_the_newest_segment_even_alone_over_it(tmp_path):
    w = writer(tmp_path, max_bytes=1, max_total_bytes=1)
    for i in range(3):
        w.write(batch(i))
    w.close()
    assert rows_of(published(tmp_path)) == rows_of(batch(2))
    assert w.counters()["quota_deleted_segments"] == 2


def test_quota_config_key_and_flag(tmp_path):
    from recorder.config import ConfigError, load_config

    path = tmp_path / "c.yaml"
    path.write_text("recorder:\n  segments_dir: /x\n  segments_max_total_bytes: 0\n")
    assert load_config(path, {}).segments_max_total_bytes == 0
    assert load_config(path, {"segments_max_total_bytes": 5}).segments_max_total_bytes == 5
    path.write_text("recorder:\n  segments_dir: /x\n  segments_max_total_bytes: -1\n")
    with pytest.raises(ConfigError, match="segments_max_total_bytes"):
        load_config(path, {})
    out = subprocess.run([str(Path(sys.executable).parent / "oisp-record"), "--segments-dir", str(tmp_path),
                          "--max-total-bytes", "-1"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "--max-total-bytes" in out.stderr


# (d) a full disk: a real 1 MiB tmpfs

@pytest.fixture
def small_disk(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "disk"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def hidden_streams_are_readable(directory: Path) -> None:
    for p in directory.iterdir():
        if p.name.endswith(names.IN_PROGRESS_SUFFIX):
            stream = StreamReader(p)
            assert sum(b.num_rows for b in stream) > 0 and stream.truncated is None, p
            stream.close()
        else:
            assert p.name.endswith(".parquet"), p


def delete_published(directory: Path) -> int:
    """Free space as an operator or a collector would; returns the rows deleted."""
    rows = 0
    for f in directory.glob("*.parquet"):
        rows += pq.read_metadata(f).num_rows
        f.unlink()
    return rows


def test_full_disk_drops_and_counts_batches_then_resumes(small_disk, caplog, monkeypatch):
    monkeypatch.setattr(publisher, "RETRY_SECONDS", 0.0)  # no 5 s pause between tries
    w = writer(small_disk, max_bytes=200_000)
    with caplog.at_level(logging.WARNING, logger="oisp.record"):
        for i in range(40):  # 2 MB into 1 MiB
            w.write(batch(i))
        c = w.counters()
        assert c["write_failed_batches"] >= 10
        assert c["write_failed_rows"] == c["write_failed_batches"] * ROWS
        assert c["write_failed_bytes"] >= c["write_failed_batches"] * ROWS * 1000
        assert c["rows_written"] + c["write_failed_rows"] == 40 * ROWS
        assert c["quota_deleted_segments"] == 0  # no quota: nothing is deleted
        w.close()  # the disk is still full: what cannot be converted waits, complete and readable
        hidden_streams_are_readable(small_disk)
        gone = delete_published(small_disk)  # every published segment reads

        # space returns: what waited is published first, then new batches are written again
        w.close()
        assert [p for p in small_disk.iterdir() if not p.name.endswith(".parquet")] == []
        gone += delete_published(small_disk)
        for i in range(40, 45):
            w.write(batch(i))
        final = w.close()
    assert final is not None
    c2 = w.counters()
    assert c2["write_failed_batches"] == c["write_failed_batches"]  # nothing failed any more
    assert [p for p in small_disk.iterdir() if not p.name.endswith(".parquet")] == []
    assert rows_of(published(small_disk)) == rows_of(pa.concat_tables(batch(i) for i in range(40, 45)))
    assert gone + 5 * ROWS == c2["rows_written"]  # every row written was published
    errors = [r.message for r in caplog.records
              if r.levelno == logging.ERROR and "cannot write segments" in r.message]
    assert len(errors) == 1, "a full disk is reported once, not once per batch"
    assert "No space left on device" in errors[0] or "waiting for disk space" in errors[0]
    assert "writing segments again" in caplog.text


def test_full_disk_with_quota_deletes_oldest_and_keeps_writing(small_disk, caplog):
    w = writer(small_disk, max_bytes=200_000, max_total_bytes=100 << 20)  # the disk fills first
    with caplog.at_level(logging.INFO, logger="oisp.record"):
        for i in range(60):  # 3 MB through 1 MiB
            w.write(batch(i))
        w.close()
    c = w.counters()
    assert c["quota_deleted_segments"] >= 5 and "the disk is full" in caplog.text
    assert c["write_failed_batches"] <= 2  # room is made, and the batch tried again
    assert [p for p in small_disk.iterdir() if not p.name.endswith(".parquet")] == []
    got = rows_of(published(small_disk))
    kept = len(got) // ROWS  # the newest batches, as many as the disk holds, none missing
    assert kept >= 4 and got == rows_of(pa.concat_tables(batch(i) for i in range(60 - kept, 60)))


# (e) the real recorder, killed mid-workload, then started again on the same directory

@pytest.mark.ebpf
def test_recorder_killed_mid_workload_loses_at_most_two_flush_intervals(tmp_path, pki):
    from conftest import connections_of, read_segments, start_recorder, stream_bytes
    from testbed.https_server import HttpsServer
    from testbed.paced_tls_client import request

    flush = 0.25  # the default flush_interval_seconds
    first = start_recorder(tmp_path)
    server = HttpsServer(pki.server_context(), body_for=lambda path, body: b"ok")
    client = subprocess.Popen([sys.executable, "-m", "testbed.paced_tls_client", str(server.port),
                               str(pki.ca_file), "5", "300"], stdout=subprocess.PIPE, text=True, cwd=REPO)
    done: list[int] = []  # CLOCK_MONOTONIC ns at which request i had been written and answered
    try:
        for line in client.stdout:
            done.append(int(line.split()[1]))
            if done[-1] - done[0] >= 8 * flush * 1e9:  # several flushes, and rotations of nothing
                break
        killed_at = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        first.proc.kill()
        first.proc.wait()
    finally:
        client.kill()
        client.wait()
        server.close()
    first_log = first.log
    assert "final totals" not in first_log  # it really died without flushing anything
    (tmp_path / "ready.json").unlink()  # the killed recorder could not remove it

    second = start_recorder(tmp_path)  # same segments directory: salvages before recording
    assert second.stop() == 0, second.log
    assert "salvaged" in second.log and "of an interrupted recorder" in second.log, second.log
    files = list(second.segments_dir.iterdir())
    assert [f.name for f in files if not f.name.endswith(".parquet")] == []
    assert any(json.loads(pq.read_metadata(f).metadata[sf.META_STATS]).get("salvaged") for f in files)

    table = read_segments(second.segments_dir)  # every file reads
    (conn,) = connections_of(table, client.pid)
    captured = stream_bytes(table, conn, "egress")  # asserts there is no hole
    sent = [request(i, 300) for i in range(len(done))]
    assert b"".join(sent).startswith(captured)
    ends = list(itertools.accumulate(map(len, sent)))  # stream offset after request i
    must_have = sum(1 for t in done if t <= killed_at - 2 * flush * 1e9)
    assert must_have > 0 and len(captured) >= ends[must_have - 1]
    whole = bisect.bisect_right(ends, len(captured))  # requests captured entirely
    print(f"kill -9: {len(done)} requests answered, {whole} captured; the last captured one was answered "
          f"{(killed_at - done[whole - 1]) / 1e6:.0f} ms before the kill, the first lost one "
          f"{(killed_at - done[whole]) / 1e6 if whole < len(done) else 0:.0f} ms before")


if __name__ == "__main__" and sys.argv[1:2] == ["child"]:
    child(sys.argv[2])
