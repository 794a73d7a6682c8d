"""`oisp-analyze ... --workers N`: one analysis on N processes of this machine, byte-identical to one.

The parent reads the plaintext socket rows (partition.py), starts N worker processes (spawned: the
parent's threads do not survive a fork), each analyzing one partition of the connections from every
file into a record file in a private temporary directory, then merges the record files into the
one-process order and writes them through the usual sinks (replay.py). Memory: a worker's is a
one-process run's for its share; the parent's, one batch of records per worker.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import tempfile
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import ExitStack, closing
from dataclasses import replace
from pathlib import Path

import pyarrow.parquet as pq

from analyzer.config import AnalyzerConfig
from analyzer.parallel.partition import open_regular, plaintext_groups
from analyzer.parallel.records import merge, read_records
from analyzer.parallel.replay import outputs_for, replay
from analyzer.parallel.totals import Totals
from analyzer.parallel.worker import (
    PartitionResult,
    PartitionTask,
    SegmentFile,
    analyze_partition,
    report_progress_to,
)
from analyzer.segments.reader import UNREADABLE
from analyzer.sinks.sink import Sink

# With --workers left out: one worker per core, but no more than one per this many rows or bytes of
# segment data (uncompressed, as the files' footers state it; repeated bodies are stated small). Starting
# a worker costs about half a second (a Python process importing the analyzer), in which one analyzes
# about this much.
ROWS_PER_WORKER = 16_384
BYTES_PER_WORKER = 32 << 20
PROGRESS_SECONDS = 0.2  # how often the progress wait looks whether every worker has ended


class ParallelError(RuntimeError):
    """A worker failed; the message is one line."""


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def default_workers(files: list[Path]) -> int:
    """--workers left out: the cores this process may use, at most one per ROWS_PER_WORKER or
    BYTES_PER_WORKER of input."""
    cores = available_cores()
    enough = 0
    for path in files:
        f = open_regular(path)
        if f is None:
            continue
        with f:
            try:
                md = pq.read_metadata(f)
            except UNREADABLE:
                continue  # the reader will say why
        size = sum(max(md.row_group(i).total_byte_size, 0) for i in range(md.num_row_groups))
        enough += max(md.num_rows / ROWS_PER_WORKER, size / BYTES_PER_WORKER)
        if enough >= cores:
            break
    return max(1, min(cores, int(enough)))


def run_parallel(files: list[Path], cfg: AnalyzerConfig, sinks: list[Sink], workers: int,
                 progress: Callable[[int], object] | None = None) -> Totals:
    """Analyze `files` on `workers` processes into `sinks` (the one-shot command's, opened).
    `progress`: called with the number of (worker, file) readings done since its last call, of
    len(files) * workers in all (each worker reads every file for its share of the connections)."""
    groups = plaintext_groups(open_regular(f) for f in files)
    segments = [SegmentFile(i, f, str(f)) for i, f in enumerate(files)]
    with tempfile.TemporaryDirectory(prefix="oisp-analyze-") as tmp:
        tasks = [PartitionTask(k, workers, groups, replace(cfg, otlp=None), outputs_for(sinks),
                               Path(tmp) / f"part-{k:04d}.arrows") for k in range(workers)]
        context = multiprocessing.get_context("spawn")
        done = context.Queue() if progress is not None else None
        with ProcessPoolExecutor(workers, mp_context=context, initializer=report_progress_to,
                                 initargs=(done,)) as pool:
            futures = [pool.submit(analyze_partition, t, segments) for t in tasks]
            if progress is not None:
                _follow(futures, done, progress, len(files) * workers)
            results = [_result(k, f) for k, f in enumerate(futures)]
        totals = Totals()
        for k, r in enumerate(results):
            totals.add(r, reading=k == 0)
        with ExitStack() as stack:
            streams = [stack.enter_context(closing(read_records(r.records))) for r in results]
            replay(merge(streams), sinks, totals.coerced)
    return totals


def _follow(futures: list, done, progress: Callable[[int], object], total: int) -> None:
    """Hand progress the readings the workers count on `done` until every one is counted, or every
    worker has ended and nothing more comes (one failed before counting all of its: _result says how)."""
    counted = 0
    while counted < total:
        try:
            done.get(timeout=PROGRESS_SECONDS)
        except queue.Empty:
            if all(f.done() for f in futures):
                return
            continue
        counted += 1
        progress(1)


def _result(k: int, future) -> PartitionResult:
    try:
        return future.result()
    except BrokenProcessPool:
        raise ParallelError(f"worker {k} died (killed, or out of memory): nothing written") from None
    except Exception as exc:  # noqa: BLE001 - whatever a worker raised ends the run, said in one line
        what = " ".join(str(exc).split()) or type(exc).__name__
        raise ParallelError(f"worker {k} failed: {type(exc).__name__}: {what}") from exc

