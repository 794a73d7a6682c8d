"""Fleet mode's discovery (analyzer/fleet/discovery.py): the files at a URL in the order one process
reads the same tree in, grouped by the nodes of their rows; and the check that stops a run whose
grouping missed a node rather than split its connections."""

from __future__ import annotations

import pytest

from analyzer.config import AnalyzerConfig
from analyzer.fleet.discovery import Group, SegmentUrl, find_segments, group_files, row_nodes
from analyzer.fleet.storage import location
from analyzer.fleet.tasks import AnalyzeTask, analyze
from analyzer.parallel.worker import GroupingError
from analyzer.segments import files as local_files
from analyzer.segments.files import NoSegmentsError
from helpers.fleet_corpus import write_corpus


def test_files_come_in_the_one_process_order(tmp_path):
    """Path component by component, as pathlib sorts (a plain string sort puts a-b/ before a/b)."""
    for name in ("a/b/2.parquet", "a-b/1.parquet", "a/c.parquet", "a/.hidden.parquet", "a/notes.txt",
                 "b.parquet", "node=x/date=2026-12-01/n-1.parquet"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    found = [f.path for f in find_segments(location(str(tmp_path)))]
    assert found == [str(p) for p in local_files.find_segments([str(tmp_path)])]
    assert found[0].endswith("a/b/2.parquet") and len(found) == 5
    glob = [f.path for f in find_segments(location(str(tmp_path / "a" / "*.parquet")))]
    assert glob == [str(tmp_path / "a" / "c.parquet")]


def test_a_url_without_segments(tmp_path):
    with pytest.raises(NoSegmentsError, match="no segment files"):
        find_segments(location(str(tmp_path)))
    with pytest.raises(NoSegmentsError, match="no such file or directory"):
        find_segments(location(str(tmp_path / "nothing")))
    with pytest.raises(ValueError, match="empty"):
        location("")


def test_files_are_grouped_by_the_nodes_of_their_rows():
    files = [SegmentUrl(i, f"f{i}", 1) for i in range(6)]
    nodes = [["a"], ["b"], None, ["b", "c"], ["a"], ["c"]]
    groups = group_files(files, nodes)
    assert [[f.index for f in g.files] for g in groups] == [[0, 4], [1, 3, 5], [2]]
    assert [g.nodes for g in groups] == [["a"], ["b", "c"], []]


def test_row_nodes_reads_the_node_column(tmp_path):
    paths = write_corpus(tmp_path / "s", files_per_node=1, copies=1, hostile=0)
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    nodes = row_nodes(location(str(tmp_path)), [str(p) for p in paths] + [str(tmp_path / "bad.parquet")])
    assert nodes == [["node-a"], ["node-b"], ["node-c"], None]


def test_rows_of_a_node_the_grouping_missed_stop_the_task(tmp_path):
    root = tmp_path / "segments"
    write_corpus(root, files_per_node=1, copies=1, hostile=0)
    source = location(str(root))
    group = Group("g", ["node-a"], find_segments(source))  # the files of three nodes, said to be one
    task = AnalyzeTask(source, group, 0, 1, AnalyzerConfig(hash_key=b"k" * 32), location(str(tmp_path / "w")))
    with pytest.raises(GroupingError, match=r"holds rows of node\(s\) node-b, which the files were not"):
        analyze(task)
