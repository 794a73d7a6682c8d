"""What runs on the cluster's workers: the analysis of one partition of one group of files (the function
of `--workers`, reading copies fetched from the source), and the writing of one group's outputs from
its partitions' records. Each task can run again from scratch (a worker that dies has its tasks run
elsewhere): it writes whole files, each under a name of its own."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from fsspec import AbstractFileSystem

from analyzer.config import AnalyzerConfig
from analyzer.fleet.discovery import Group, SegmentUrl
from analyzer.fleet.outputs import write_outputs
from analyzer.fleet.storage import Location, is_local, put
from analyzer.parallel.partition import plaintext_groups
from analyzer.parallel.recording import Outputs
from analyzer.parallel.records import merge, read_records
from analyzer.parallel.totals import Totals
from analyzer.parallel.worker import PartitionResult, PartitionTask, SegmentFile, analyze_partition

# every output of fleet mode comes from the events and the DuckDB rows
FLEET_OUTPUTS = Outputs(events=True, tables=True)


@dataclass(frozen=True)
class AnalyzeTask:
    source: Location
    group: Group
    part: int
    parts: int
    cfg: AnalyzerConfig
    work: Location  # where the record files go (the run's scratch directory under the output)


@dataclass
class GroupOutput:
    group: str
    nodes: list[str]
    totals: Totals
    files: list[tuple[str, int]] = field(default_factory=list)  # (path under the output, bytes)


# Dask's statistical profiler samples the stacks of running tasks every few milliseconds and keeps the
# frames it sampled, and with them the objects their variables hold: views of the parsers' buffers,
# bodies, events. A view of an HTTP/2 connection's buffer used to block the buffer's next resize
# (BufferError), which ended parsing of that connection: results that changed from run to run. The
# HTTP/2 parser now works on a new buffer then (tests/analyzer/http/test_parser_state.py), but no test
# can show that every other object a kept frame holds is left as it was; fleet mode's local cluster runs
# without the profiler, and a worker running it refuses the analysis.
PROFILER_ON = ("this Dask worker runs the statistical profiler, which can change the analysis's results: "
               "start the workers with DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED=False")


def analyze(task: AnalyzeTask) -> PartitionResult:
    """Partition task.part of the group's files, its records uploaded to the scratch directory."""
    _refuse_profiler()
    fs, _ = task.source.fs()
    groups = plaintext_groups(_open(fs, f.path) for f in task.group.files)
    with tempfile.TemporaryDirectory(prefix="oisp-fleet-") as tmp:
        records = Path(tmp) / "records.arrows"
        job = PartitionTask(task.part, task.parts, groups, task.cfg, FLEET_OUTPUTS, records, "lz4",
                            frozenset(task.group.nodes))
        result = analyze_partition(job, _local_copies(fs, task.group.files, Path(tmp)))
        work_fs, work = task.work.fs()
        target = f"{work}/{task.group.name}/part-{task.part:04d}.arrows"
        put(records, work_fs, target)
    result.records = Path(target)
    return result


def write(task: AnalyzeTask, results: list[PartitionResult], out: Location) -> GroupOutput:
    """The group's outputs from its partitions' records (task: any of the group's analyze tasks)."""
    totals = Totals()
    for k, r in enumerate(results):
        totals.add(r, reading=k == 0)
    work_fs, _ = task.work.fs()
    with tempfile.TemporaryDirectory(prefix="oisp-fleet-") as tmp:
        local = []
        for k, r in enumerate(results):
            local.append(Path(tmp) / f"part-{k:04d}.arrows")
            work_fs.get_file(str(r.records), str(local[-1]))
        streams = [read_records(p) for p in local]
        files = write_outputs(merge(streams), totals.coerced, Path(tmp) / "out", out)
    return GroupOutput(task.group.name, task.group.nodes, totals, files)


def _refuse_profiler() -> None:
    from distributed import get_worker

    try:
        worker = get_worker()
    except ValueError:
        return  # not on a Dask worker
    if "profile" in worker.periodic_callbacks:
        raise RuntimeError(PROFILER_ON)


def _open(fs: AbstractFileSystem, path: str) -> BinaryIO | None:
    try:
        return fs.open(path, "rb")
    except OSError:
        return None  # gone since it was listed: the reader says so


def _display(fs: AbstractFileSystem, path: str) -> str:
    return path if is_local(fs) else fs.unstrip_protocol(path)


def _local_copies(fs: AbstractFileSystem, files: list[SegmentUrl], tmp: Path) -> Iterator[SegmentFile]:
    """The files as the reader reads them: local ones in place, others copied here one at a time (the
    next one fetched while the current one is analyzed) and removed once read. A file gone since it
    was listed is handed on as it is (the reader reports it); any other failure to fetch ends the task."""
    if is_local(fs):
        yield from (SegmentFile(f.index, Path(f.path), f.path) for f in files)
        return

    def fetch(f: SegmentUrl) -> Path:
        local = tmp / f"segment-{f.index}.parquet"
        try:
            fs.get_file(f.path, str(local))
        except FileNotFoundError:
            local.unlink(missing_ok=True)
        return local

    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(fetch, files[0]) if files else None
        for i, f in enumerate(files):
            local = pending.result()
            pending = pool.submit(fetch, files[i + 1]) if i + 1 < len(files) else None
            try:
                yield SegmentFile(f.index, local, _display(fs, f.path))
            finally:
                local.unlink(missing_ok=True)
