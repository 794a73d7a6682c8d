"""Malformed segment files: skipped, or their bad rows dropped, each with a one-line reason, never a
traceback nor a hang; the live checkpoint is never written through a planted link."""

from __future__ import annotations

import os
import stat
import subprocess
import threading
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from analyzer.live import checkpoint
from analyzer.segments.reader import ReadReport, read_batches
from analyzer.streams.tracker import ConnectionTracker
from conftest import BIN
from helpers.analyzer_inputs import FIXTURES

H1 = sorted((FIXTURES / "segments" / "h1").glob("*.parquet"))
DIRECTION_REASON = "data or gap row without a direction of egress or ingress"


def h1() -> pa.Table:
    return pq.read_table(H1[0])


def with_values(table: pa.Table, column: str, change: dict[int, object]) -> pa.Table:
    """The table with some values of one column replaced (by row index), keeping the column's type."""
    f = table.schema.field(column)
    as_int = pa.types.is_timestamp(f.type)  # ns: no Python datetime holds them
    values = (table[column].cast(pa.int64()) if as_int else table[column]).to_pylist()
    for i, v in change.items():
        values[i] = v
    array = pa.array(values, pa.int64()).cast(f.type) if as_int else pa.array(values, f.type)
    # a foreign writer need not declare what the recorder declares non-nullable
    return table.set_column(table.schema.get_field_index(column), f.with_nullable(True), array)


def first_row(table: pa.Table, kind: str) -> int:
    return table["kind"].to_pylist().index(kind)


def read(files: list[Path]) -> tuple[ReadReport, list]:
    """Read as the one-shot analysis does, through the tracker: every exchange, or the exception."""
    report = ReadReport()
    exchanges = list(ConnectionTracker().process(read_batches(files, report)))
    return report, exchanges


def analyze(*paths: Path, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "oisp-analyze"), *map(str, paths), "--exchanges", str(out)],
                          capture_output=True, text=True, timeout=120)


def with_timeout(fn, seconds: float = 20):
    result: list = []
    t = threading.Thread(target=lambda: result.append(fn()), daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"still blocked after {seconds} s"
    return result[0]


# ---- files that are not regular files ---------------------------------------------------------

def test_fifo_named_parquet_is_skipped_with_its_reason(tmp_path):
    fifo = tmp_path / "a-fifo.parquet"
    os.mkfifo(fifo)
    link = tmp_path / "b-link.parquet"
    link.symlink_to(fifo)
    good = tmp_path / "c-good.parquet"
    good.write_bytes(H1[0].read_bytes())
    report, exchanges = with_timeout(lambda: read([fifo, link, good]))
    assert report.problems == [(str(fifo), "not a regular file: a FIFO"),
                               (str(link), "not a regular file: a symbolic link to a FIFO")]
    assert report.files_read == 1 and exchanges
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_fifo_in_a_directory_does_not_hang_the_cli(tmp_path):
    os.mkfifo(tmp_path / "a-fifo.parquet")
    (tmp_path / "b-good.parquet").write_bytes(H1[0].read_bytes())
    out = analyze(tmp_path, out=tmp_path / "x.jsonl")  # subprocess's timeout bounds it
    assert out.returncode == 0, out.stderr
    assert f"oisp-analyze: skipped {tmp_path / 'a-fifo.parquet'}: not a regular file: a FIFO\n" in out.stderr
    assert "1 of 2 segment file(s)" in out.stderr and "Traceback" not in out.stderr


def test_only_a_fifo_is_a_runtime_failure(tmp_path):
    fifo = tmp_path / "a.parquet"
    os.mkfifo(fifo)
    out = analyze(fifo, out=tmp_path / "x.jsonl")
    assert out.returncode == 1
    assert out.stderr.startswith(f"oisp-analyze: skipped {fifo}: not a regular file: a FIFO\n")


def test_link_to_a_regular_segment_is_read(tmp_path):
    link = tmp_path / "link.parquet"
    link.symlink_to(H1[0])
    report, _ = read([link])
    assert report.problems == [] and report.files_read == 1


# ---- rows that break the format ---------------------------------------------------------------

def test_null_direction_drops_the_row_with_a_reason(tmp_path):
    table = h1()
    i = first_row(table, "data")
    bad = tmp_path / "bad.parquet"
    pq.write_table(with_values(table, "direction", {i: None}), bad)
    report, exchanges = read([bad])  # no exception
    assert report.problems == [
        (str(bad), f"1 of {table.num_rows} rows dropped, breaking the segment format "
                   f"({DIRECTION_REASON}: 1)")]
    assert report.rows_dropped == 1 and report.rows_read == table.num_rows - 1 and report.files_read == 1
    assert exchanges  # the rest is analyzed

    out = analyze(bad, out=tmp_path / "x.jsonl")
    assert out.returncode == 0 and "Traceback" not in out.stderr
    lines = out.stderr.splitlines()
    assert lines[0] == f"oisp-analyze: skipped {bad}: 1 of {table.num_rows} rows dropped, breaking the " \
                       f"segment format ({DIRECTION_REASON}: 1)"
    assert lines[1].startswith(f"oisp-analyze: 1 of 1 segment file(s), {table.num_rows - 1} rows")


@pytest.mark.parametrize("kind, column, value, reason", [
    ("data", "direction", "sideways", DIRECTION_REASON),
    ("data", "data", None, "data row with null data"),
    ("data", "stream_offset", None, "null stream_offset"),
    ("data", "conn_id", None, "null conn_id"),
    ("data", "kind", "mystery", "unknown kind"),
    ("data", "kind", None, "null kind"),
    ("data", "ts_wall", None, "null ts_wall"),
    ("data", "pid", None, "null pid"),
    ("open", "comm", None, "null comm"),
    ("process", "cmdline", ["python", None], "null argument in a cmdline"),
])
def test_each_broken_row_is_dropped_and_counted(tmp_path, kind, column, value, reason):
    table = h1()
    bad = tmp_path / "bad.parquet"
    pq.write_table(with_values(table, column, {first_row(table, kind): value}), bad)
    report, _ = read([bad])
    assert report.problems == [
        (str(bad), f"1 of {table.num_rows} rows dropped, breaking the segment format ({reason}: 1)")]


def test_gap_row_without_length(tmp_path):
    table = h1()
    i = first_row(table, "data")
    gap = with_values(with_values(table, "kind", {i: "gap"}), "length", {i: None})
    bad = tmp_path / "bad.parquet"
    pq.write_table(gap, bad)
    report, _ = read([bad])
    assert report.problems[0][1].endswith("(gap row with null length: 1)")


def test_reasons_are_counted_together(tmp_path):
    table = h1()
    data = [i for i, k in enumerate(table["kind"].to_pylist()) if k == "data"]
    broken = with_values(table, "direction", {data[0]: None, data[1]: None})
    broken = with_values(broken, "data", {data[1]: None, data[2]: None})  # data[1]: counted once
    bad = tmp_path / "bad.parquet"
    pq.write_table(broken, bad)
    report, _ = read([bad])
    assert report.rows_dropped == 3
    assert report.problems[0][1].endswith(f"({DIRECTION_REASON}: 2; data row with null data: 1)")


# ---- schemas ----------------------------------------------------------------------------------

def test_wrong_column_type_skips_the_file(tmp_path):
    table = h1()
    i = table.schema.get_field_index("direction")
    ints = table.set_column(i, pa.field("direction", pa.int64()), pa.array([1] * table.num_rows, pa.int64()))
    bad = tmp_path / "bad.parquet"
    pq.write_table(ints, bad)
    report, exchanges = read([bad])
    assert report.problems == [(str(bad), "columns of the wrong type: direction is int64, not "
                                          "dictionary<values=string, indices=int32, ordered=0>")]
    assert report.files_read == 0 and exchanges == []

    out = analyze(bad, out=tmp_path / "x.jsonl")
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stderr.startswith(f"oisp-analyze: skipped {bad}: columns of the wrong type: "
                                 "direction is int64")


def test_other_encodings_of_the_same_values_are_read_alike(tmp_path):
    table = h1()
    plain = table
    for name in ("kind", "direction", "conn_id", "node", "comm"):  # plain strings, not dictionaries
        i = plain.schema.get_field_index(name)
        plain = plain.set_column(i, pa.field(name, pa.large_string()), plain[name].cast(pa.large_string()))
    i = plain.schema.get_field_index("pid")
    plain = plain.set_column(i, pa.field("pid", pa.int64()), plain["pid"].cast(pa.int64()))
    path = tmp_path / "plain.parquet"
    pq.write_table(plain, path)
    report, exchanges = read([path])
    _, expected = read(H1)
    assert report.problems == [] and report.rows_read == table.num_rows
    assert [x.request.body for x in exchanges] == [x.request.body for x in expected]


def test_unreadable_file_reason_is_one_line(tmp_path):
    bad = tmp_path / "garbage.parquet"
    bad.write_bytes(b"PAR1" + os.urandom(3000) + b"PAR1")
    report, _ = read([bad])
    ((path, why),) = report.problems
    assert path == str(bad) and why.startswith("unreadable: ") and "\n" not in why


def test_duplicate_columns_are_a_reason_not_a_traceback(tmp_path):
    table = h1()
    nulls = pa.nulls(table.num_rows, pa.string())
    dup = table.append_column(pa.field("direction", pa.string()), nulls)
    bad = tmp_path / "bad.parquet"
    pq.write_table(dup, bad)
    report, _ = read([bad])
    assert report.problems == [(str(bad), "duplicate column names")]


# ---- the live checkpoint ----------------------------------------------------------------------

def test_checkpoint_tmp_is_never_written_through_a_link(tmp_path):
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    path = checkpoint.path_for(tmp_path / "events.jsonl")
    tmp = path.with_name(path.name + ".tmp")
    tmp.symlink_to(victim)
    with pytest.raises(FileExistsError, match="not a regular file of ours"):
        checkpoint.save(checkpoint.Checkpoint(segments_dir="/s"), path)
    assert victim.read_bytes() == b"precious" and tmp.is_symlink() and not path.exists()


def test_stale_checkpoint_tmp_is_replaced(tmp_path):
    path = checkpoint.path_for(tmp_path / "events.jsonl")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("half a checkpoint")
    os.chmod(tmp, 0o644)
    checkpoint.save(checkpoint.Checkpoint(segments_dir="/s", processed={"a.parquet"}), path)
    assert not tmp.exists() and checkpoint.load(path).processed == {"a.parquet"}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
