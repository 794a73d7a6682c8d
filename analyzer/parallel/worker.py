"""One partition of an analysis, in its own process: every file read in order (the segment reader,
unchanged), the rows of the partition's connections kept with their global positions, the usual
pipeline, its outputs recorded to a file (recording.py). The same function serves `--workers` and
fleet mode's tasks (analyzer/fleet/tasks.py)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from analyzer.collector_pace import pace_for_batch
from analyzer.config import AnalyzerConfig
from analyzer.heap_reuse import keep_freed_memory
from analyzer.parallel.order import with_positions
from analyzer.parallel.partition import partition_mask
from analyzer.parallel.recording import Outputs, RecordingSink
from analyzer.parallel.records import RecordWriter
from analyzer.pipeline import Pipeline
from analyzer.segments.reader import ReadReport, read_batches


@dataclass
class SegmentFile:
    index: int  # in the whole run's file order (order.py)
    path: Path  # where this process reads it
    name: str  # what problems name it by (the one-process run's path, or a URL)


@dataclass
class PartitionTask:
    part: int
    parts: int
    groups: dict[str, str]  # partition.plaintext_groups
    cfg: AnalyzerConfig
    outputs: Outputs
    records: Path  # the record file to write
    compression: str | None = None  # of the record file's buffers (fleet mode: lz4)
    # fleet mode: the nodes the files were grouped by; a row of another node means the grouping missed
    # it (a file its scan could not read), and the run must stop rather than split its connections
    nodes: frozenset[str] | None = None


@dataclass
class PartitionResult:
    records: Path
    connections: int = 0
    exchanges: int = 0
    incomplete: int = 0
    events: int = 0
    parse_errors: int = 0
    coerced: dict[str, int] = field(default_factory=dict)  # DuckDB values coerced, by column
    # the reading of every file (the same in every partition of the same files)
    files_read: int = 0
    rows_read: int = 0
    rows_dropped: int = 0
    problems: list[tuple[str, str]] = field(default_factory=list)


# --workers on a terminal: a queue this process puts a 1 on per file read (set by the pool's initializer)
_progress = None


def report_progress_to(queue) -> None:
    """The pool's initializer: files read are counted on `queue` (None: not counted)."""
    global _progress
    _progress = queue
    pace_for_batch()  # a spawned process that analyzes one partition and exits
    keep_freed_memory()


def analyze_partition(task: PartitionTask, files: Iterable[SegmentFile]) -> PartitionResult:
    """Analyze partition task.part of task.parts of `files` (in run order); records to task.records."""
    cfg = replace(task.cfg, otlp=None)  # the parent exports
    result = PartitionResult(task.records)
    with RecordWriter(task.records, task.compression) as writer:
        sink = RecordingSink(writer, task.outputs, cfg)
        pipeline = Pipeline(cfg, [sink], export=False)
        pipeline.run(_batches(task, files, result))
        pipeline.close()
    result.connections = pipeline.tracker.connections_seen
    result.exchanges, result.incomplete = pipeline.exchanges, pipeline.incomplete
    result.events = pipeline.events
    result.parse_errors = pipeline.parse_errors
    result.coerced = dict(sink.coerced)
    return result


def _batches(task: PartitionTask, files: Iterable[SegmentFile], result: PartitionResult) \
        -> Iterator[pa.RecordBatch]:
    for f in files:
        report = ReadReport()
        row = 0
        for batch in read_batches([f.path], report):
            if task.nodes is not None:
                _check_nodes(batch, task.nodes, f.name)
            positioned = with_positions(batch, f.index, row)
            row += batch.num_rows
            # batch boundaries stay where the one-process run has them: the tracker hands exchanges
            # on per batch, and a plaintext connection's events read its other end's state then
            yield positioned.filter(partition_mask(positioned, task.part, task.parts, task.groups))
        result.files_read += report.files_read
        result.rows_read += report.rows_read
        result.rows_dropped += report.rows_dropped
        result.problems += [(f.name, why) for _, why in report.problems]
        if _progress is not None:
            _progress.put(1)


class GroupingError(RuntimeError):
    """A file's rows are of a node its group was not made with."""


def _check_nodes(batch: pa.RecordBatch, nodes: frozenset[str], name: str) -> None:
    seen = set(pc.unique(batch.column("node").cast(pa.string())).to_pylist())
    if not seen <= nodes:
        raise GroupingError(f"{name} holds rows of node(s) {', '.join(sorted(map(str, seen - nodes)))}, "
                            "which the files were not grouped by (its node column could not be read "
                            "before): run again")
