"""A fleet run, from the client: list the segments, learn each file's nodes (tasks), group the files,
analyze every group in partitions and write each group's outputs (tasks), then write the manifest,
`_SUCCESS.json`, last: a run that failed leaves none, so readers go by it.

Dask runs the tasks; a task whose worker died runs again elsewhere (distributed.scheduler.allowed-failures,
3 by default), and after that the run fails with KilledWorker. A task that raises fails the run: the
error is reported in one line, no manifest is written, and the scratch directory is removed.
"""

from __future__ import annotations

import json
import logging
import math
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from analyzer.config import AnalyzerConfig
from analyzer.fleet.discovery import find_segments, group_files, row_nodes
from analyzer.fleet.storage import Location, is_local, put
from analyzer.fleet.tasks import AnalyzeTask, GroupOutput, analyze, write
from analyzer.parallel.run import available_cores
from analyzer.parallel.totals import Totals
from analyzer.segments.reader import one_line

MANIFEST = "_SUCCESS.json"
SCRATCH = "_work"  # record files of runs in progress: <output>/_work/<run id>/, removed at the end
OUTPUT_DIRS = ("events", "tables")
SCAN_FILES = 64  # files per task that reads their node column


class FleetError(RuntimeError):
    """The run failed; the message is one line."""


class FleetUsageError(ValueError):
    """The run cannot start as asked (an output in the way, the output inside the input)."""


@dataclass
class FleetOptions:
    source: Location
    out: Location
    scheduler: str | None = None  # a Dask scheduler's address; None: a local cluster
    workers: int | None = None  # the local cluster's worker processes (None: the cores available)
    parts: int | None = None  # partitions per group of files (None: enough to keep every worker busy)
    overwrite: bool = False
    connect_timeout: float = 30.0


def run_fleet(opts: FleetOptions, cfg: AnalyzerConfig) -> dict:
    """The whole run; the manifest written. FleetUsageError, NoSegmentsError or FleetError otherwise."""
    started = _now()
    files = find_segments(opts.source)
    _check_output(opts)
    run_id = uuid.uuid4().hex[:12]
    work = opts.out.join(SCRATCH, run_id)
    with _client(opts) as client:
        _clear_output(opts)  # only once the cluster answers: an earlier output stays if it does not
        try:
            outputs = _run(client, opts, cfg, files, work, run_id)
        finally:
            _remove(work)
    manifest = _manifest(opts, files, outputs, started)
    _write_manifest(opts.out, manifest)
    return manifest


def _run(client, opts: FleetOptions, cfg: AnalyzerConfig, files, work: Location, run_id: str) \
        -> list[GroupOutput]:
    chunks = [files[i:i + SCAN_FILES] for i in range(0, len(files), SCAN_FILES)]
    scans = [client.submit(row_nodes, opts.source, [f.path for f in chunk], key=f"scan-{i}-{run_id}")
             for i, chunk in enumerate(chunks)]
    nodes = [n for chunk in _gather(client, scans) for n in chunk]
    groups = group_files(files, nodes)
    threads = sum(client.nthreads().values()) or 1
    parts = opts.parts or max(1, math.ceil(threads / len(groups)))
    cfg = _for_workers(cfg)
    writes = []
    for g in groups:
        tasks = [AnalyzeTask(opts.source, g, k, parts, cfg, work) for k in range(parts)]
        analyzed = [client.submit(analyze, t, key=f"analyze-{g.name}-{t.part}-{run_id}") for t in tasks]
        writes.append(client.submit(write, tasks[0], analyzed, opts.out, key=f"write-{g.name}-{run_id}"))
    return _gather(client, writes)


def _gather(client, futures: list) -> list:
    """The futures' results, or FleetError naming the task that failed and why (the rest cancelled)."""
    from distributed.scheduler import KilledWorker

    try:
        return client.gather(futures)
    except KilledWorker as exc:
        client.cancel(futures)
        task = exc.task if hasattr(exc, "task") else exc.args[0]
        raise FleetError(f"task {task} failed: the workers running it died (the scheduler's "
                         f"allowed-failures reached)") from None
    except Exception as exc:  # noqa: BLE001 - a task's own exception, raised again here
        client.cancel(futures)
        raise FleetError(f"a task failed: {type(exc).__name__}: {one_line(str(exc))}") from exc


@contextmanager
def _client(opts: FleetOptions) -> Iterator:
    import dask
    from distributed import Client, LocalCluster

    if opts.scheduler:
        try:
            client = Client(opts.scheduler, timeout=opts.connect_timeout, set_as_default=False)
        except (OSError, TimeoutError) as exc:
            raise FleetError(f"cannot reach the Dask scheduler at {opts.scheduler}: {one_line(str(exc))}") \
                from None
        with client:
            yield client
        return
    # Workers without the profiler (tasks.PROFILER_ON). Set for the whole process, not for a block: a
    # nanny hands its worker this process's config each time it starts one, restarts after a death too.
    dask.config.set({"distributed.worker.profile.enabled": False})
    cluster = LocalCluster(n_workers=opts.workers or available_cores(), threads_per_worker=1,
                           processes=True, dashboard_address=None, silence_logs=logging.ERROR)
    with cluster, Client(cluster, set_as_default=False) as client:
        yield client


def _for_workers(cfg: AnalyzerConfig) -> AnalyzerConfig:
    from dataclasses import replace

    return replace(cfg, otlp=None)  # fleet mode writes files; the exporter is the one-shot command's


def _check_output(opts: FleetOptions) -> None:
    """FleetUsageError if the output cannot be written as asked; nothing is changed."""
    fs, root = opts.out.fs()
    src_fs, src_root = opts.source.fs()
    if type(fs) is type(src_fs) and _inside(root, src_root):
        raise FleetUsageError(f"the output {opts.out.url} is inside the input {opts.source.url}")
    earlier = [name for name in (MANIFEST, *OUTPUT_DIRS) if fs.exists(f"{root}/{name}")]
    if earlier and not opts.overwrite:
        raise FleetUsageError(f"{opts.out.url} holds an earlier run's output ({', '.join(earlier)}): "
                              "--overwrite replaces it")


def _clear_output(opts: FleetOptions) -> None:
    """An earlier run's output removed (--overwrite), the manifest first: a run stopped while replacing
    must not look complete."""
    fs, root = opts.out.fs()
    for name in (MANIFEST, *OUTPUT_DIRS):
        if fs.exists(f"{root}/{name}"):
            fs.rm(f"{root}/{name}", recursive=True)
    if is_local(fs):
        fs.makedirs(root, exist_ok=True)


def _inside(path: str, directory: str) -> bool:
    p, d = PurePosixPath(path), PurePosixPath(directory)
    return p == d or d in p.parents


def _remove(location: Location) -> None:
    fs, path = location.fs()
    try:
        if fs.exists(path):
            fs.rm(path, recursive=True)
        parent = path.rsplit("/", 1)[0]
        if is_local(fs) and fs.exists(parent) and not fs.ls(parent):
            fs.rmdir(parent)
    except OSError as exc:
        logging.getLogger("oisp.analyze").warning("could not remove %s: %s", location.url, exc)


def _manifest(opts: FleetOptions, files, outputs: list[GroupOutput], started: str) -> dict:
    totals = Totals()
    for o in outputs:
        totals.combine(o.totals)
    fs, _ = opts.source.fs()
    # problems name files by their path (local) or URL: in the run's file order
    index = {name: f.index for f in files for name in (f.path, fs.unstrip_protocol(f.path))}
    written = sorted((path, size) for o in outputs for path, size in o.files)
    return {
        "format": "oisp-fleet-output/1",
        "source": opts.source.url,
        "started": started,
        "finished": _now(),
        "segment_files": len(files),
        "files_read": totals.files_read,
        "rows": totals.rows_read,
        "rows_dropped": totals.rows_dropped,
        "connections": totals.connections,
        "exchanges": totals.exchanges,
        "incomplete": totals.incomplete,
        "events": totals.events,
        "parse_errors": totals.parse_errors,
        "problems": [{"file": f, "problem": why}
                     for f, why in sorted(totals.problems, key=lambda p: index.get(p[0], -1))],
        "nodes": sorted({n for o in outputs for n in o.nodes}),
        "files": [{"path": path, "bytes": size} for path, size in written],
    }


def _write_manifest(out: Location, manifest: dict) -> None:
    import tempfile

    fs, root = out.fs()
    with tempfile.TemporaryDirectory(prefix="oisp-fleet-") as tmp:
        local = Path(tmp) / MANIFEST
        local.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
        put(local, fs, f"{root}/{MANIFEST}")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
