"""Row groups are read in runs within a budget: a file of many tiny row groups costs a few reads
and batches, not one per group, and reading it so changes nothing in what comes out."""

from __future__ import annotations

import math

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from analyzer.segments import reader
from analyzer.segments.reader import ReadReport, read_batches, row_group_runs
from analyzer.sinks.exchanges_jsonl import exchange_to_dict
from analyzer.streams.tracker import ConnectionTracker
from helpers.analyzer_inputs import FIXTURES

H1 = sorted((FIXTURES / "segments" / "h1").glob("*.parquet"))


def exchanges(files) -> list[dict]:
    return [exchange_to_dict(x) for x in ConnectionTracker().process(read_batches(files, ReadReport()))]


def test_many_tiny_row_groups_are_read_in_few_batches(tmp_path, monkeypatch):
    table = pq.read_table(H1[0])
    path = tmp_path / "tiny.parquet"
    pq.write_table(table, path, row_group_size=1)  # one row group per row, as a hostile writer may
    groups = pq.ParquetFile(path).num_row_groups
    assert groups == table.num_rows
    report = ReadReport()
    batches = list(read_batches([path], report))
    assert report.rows_read == table.num_rows and not report.problems
    assert len(batches) == 1  # 130 small rows: within every budget, so one read, not 130
    monkeypatch.setattr(reader, "BATCH_GROUPS", 16)
    assert len(list(read_batches([path], ReadReport()))) == math.ceil(groups / 16)
    assert exchanges([path]) == exchanges(H1)


def test_row_groups_over_the_budget_are_read_one_by_one(tmp_path, monkeypatch):
    table = pq.read_table(H1[0])
    path = tmp_path / "groups.parquet"
    pq.write_table(table, path, row_group_size=10)
    groups = pq.ParquetFile(path).num_row_groups
    monkeypatch.setattr(reader, "BATCH_BYTES", 1)  # memory: never more than one row group at once
    assert len(list(read_batches([path], ReadReport()))) == groups
    monkeypatch.setattr(reader, "BATCH_BYTES", 1 << 40)
    monkeypatch.setattr(reader, "BATCH_ROWS", 25)  # two groups of ten per run
    assert len(list(read_batches([path], ReadReport()))) == math.ceil(groups / 2)
    monkeypatch.setattr(reader, "BATCH_ROWS", 1 << 40)
    monkeypatch.setattr(reader, "BATCH_GROUPS", 3)
    assert len(list(read_batches([path], ReadReport()))) == math.ceil(groups / 3)
    assert exchanges([path]) == exchanges(H1)


def test_runs_cover_every_row_group_once_in_order(tmp_path):
    path = tmp_path / "g.parquet"
    pq.write_table(pa.table({"x": list(range(100))}), path, row_group_size=7)
    md = pq.ParquetFile(path).metadata
    runs = list(row_group_runs(md, max_rows=20, max_bytes=1 << 30, max_groups=100))
    assert [i for run in runs for i in run] == list(range(md.num_row_groups))
    assert all(len(run) == 2 for run in runs[:-1])  # 14 rows fit in 20, 21 would not


def test_rows_breaking_the_format_are_counted_alike_across_runs(tmp_path):
    table = pq.read_table(H1[0])
    kinds = table["kind"].cast(pa.string())
    bad = pc.equal(kinds, "data")
    field = table.schema.field("data").with_nullable(True)
    broken = table.set_column(table.schema.get_field_index("data"), field,
                              pc.if_else(bad, pa.scalar(None, pa.binary()), table["data"]))
    path = tmp_path / "broken.parquet"
    pq.write_table(broken, path, row_group_size=1)
    report = ReadReport()
    rows = sum(b.num_rows for b in read_batches([path], report))
    assert report.rows_dropped == pc.sum(bad).as_py() and rows == table.num_rows - report.rows_dropped


def test_row_groups_of_the_recorders_size_are_never_joined(tmp_path, monkeypatch):
    # joining normal row groups held 4x the memory (their metadata understates repeated bodies): only
    # small groups are joined, whatever the byte and row budgets allow
    path = tmp_path / "g.parquet"
    pq.write_table(pa.table({"x": list(range(5000))}), path, row_group_size=1000)
    md = pq.ParquetFile(path).metadata
    monkeypatch.setattr(reader, "SMALL_GROUP_ROWS", 1000)
    runs = list(row_group_runs(md, max_rows=1 << 40, max_bytes=1 << 40, max_groups=100))
    assert runs == [[0], [1], [2], [3], [4]]
    monkeypatch.setattr(reader, "SMALL_GROUP_ROWS", 1001)
    assert list(row_group_runs(md, max_rows=1 << 40, max_bytes=1 << 40, max_groups=100)) == [[0, 1, 2, 3, 4]]


def test_a_batch_is_freed_before_the_next_is_read(tmp_path, monkeypatch):
    """Read and tracked, a batch's Arrow memory is let go once the tracker has taken its columns: when the
    next row groups are read, nothing of the batches before is still allocated, not even through the cycle
    an h11 parse error makes (this fixture's connection, cut at each file's end, has them). Held, they made
    each read fault in fresh memory: on the large-bodies bench, 0.5 s of reading became 0.1 s."""
    table = pq.read_table(H1[0])
    big = table.set_column(table.schema.get_field_index("data"), table.schema.field("data"),
                           pa.array([None if v is None else v * 10 for v in table["data"].to_pylist()],
                                    table.schema.field("data").type))
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"seg-{i}.parquet")
        pq.write_table(big, paths[-1], row_group_size=65)  # two reads a file (BATCH_GROUPS below)
    monkeypatch.setattr(reader, "BATCH_GROUPS", 1)
    one_batch = big.nbytes // 2
    del big, table  # nothing of this test's own is allocated
    held = []
    read = pq.ParquetFile.read_row_groups

    def watched(self, *args, **kwargs):
        held.append(pa.total_allocated_bytes())
        return read(self, *args, **kwargs)

    monkeypatch.setattr(pq.ParquetFile, "read_row_groups", watched)
    sizes = []
    for x in ConnectionTracker().process(read_batches(paths, ReadReport())):
        sizes.append(len(x.response.body))
    assert len(held) == 6 and sum(sizes) > 0
    assert one_batch > 5_000_000
    assert max(held) < one_batch / 10, (held, one_batch)
