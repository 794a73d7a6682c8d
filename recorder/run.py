"""The recorder's main loop: drain the ring buffer, decode in batches, write segments, log totals."""

from __future__ import annotations

import ctypes
import json
import logging
import os
import queue
import signal
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from contract.metrics_server import MetricsServer
from recorder.capture import libraries, preflight
from recorder.capture import ringbuf as ringbuf_reader
from recorder.capture.discovery import LibraryDiscovery, capture_filter, run_in_thread
from recorder.capture.probes import CaptureProgram
from recorder.capture.records import RecordDecoder, warm_up
from recorder.config import RecorderConfig
from recorder.identity import sockets as socket_table
from recorder.identity.cgroups import cgroup2_root, cgroup_ids
from recorder.identity.pods import PodMetadataSource
from recorder.identity.processes import CgroupPaths, ProcessRegistry
from recorder.metrics import RecorderMetrics
from recorder.store.salvage import salvage
from recorder.store.writer import SegmentWriter

log = logging.getLogger("oisp.record")

# The ring buffer is drained on this timer: records do not wake the recorder (cheaper for the
# traced threads). The ring buffer (128 MiB by default) holds far more than 20 ms of any load.
DRAIN_INTERVAL_SECONDS = 0.02
# Hand a batch to the writer thread early when it holds this much, to bound the recorder's memory.
MAX_BATCH_BYTES = 16 * 1024 * 1024
# Batches waiting for the writer thread. When it falls this far behind, draining waits for it, and
# the ring buffer (not the recorder's memory) absorbs the backlog, or drops and counts it.
MAX_QUEUED_BATCHES = 4
# Size of the exec/exit event ring buffer (BPF_RINGBUF_OUTPUT(proc_events, 64) pages).
PROC_EVENTS_BYTES = 64 * 4096
# The metrics endpoint serves totals the main loop snapshots this often (a scrape never reads BPF maps).
METRICS_INTERVAL_SECONDS = 1.0


def use_jemalloc() -> None:
    """Arrow's default pool here is mimalloc, which hands freed memory back to the kernel at once:
    every batch then faults in tens of MB afresh, and page faults are slow on VMs. With it, decoding
    a batch took 0.2-1.7 s in the first seconds of load and the ring buffer overflowed; with
    jemalloc, 0.05-0.1 s and no drops (docs/performance.md)."""
    try:
        pa.set_memory_pool(pa.jemalloc_memory_pool())
    except NotImplementedError:
        log.warning("pyarrow has no jemalloc: using its default memory pool")


def _write_ready_file(path: Path, info: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(info, indent=2) + "\n")
    os.rename(tmp, path)


def _serve_metrics(cfg: RecorderConfig, metrics: RecorderMetrics) -> MetricsServer | None:
    if cfg.metrics_port is None:
        return None
    try:
        server = MetricsServer(cfg.metrics_address, cfg.metrics_port, metrics.registry(),
                               ready=lambda: metrics.ready)
    except OSError as exc:
        raise preflight.PreflightError(
            f"cannot serve metrics on {cfg.metrics_address}:{cfg.metrics_port}: {exc.strerror}") from None
    log.info("metrics on http://%s:%d/metrics", cfg.metrics_address, server.port)
    return server


def record(cfg: RecorderConfig) -> int:
    """Run until SIGINT/SIGTERM or cfg.duration; returns the exit code."""
    bpf_cls = preflight.run_all()
    preflight.prepare_segments_dir(cfg.segments_dir)
    # served from here on (ready: 0), so a liveness probe answers while the program compiles
    metrics = RecorderMetrics(cfg.segments_dir)
    metrics_server = _serve_metrics(cfg, metrics)
    salvage(cfg.segments_dir)  # what a killed recorder left, published before anything new

    program = CaptureProgram(bpf_cls, cfg)
    try:
        program.set_filters(cfg.pids, cfg.comms, cgroup_ids(cfg.cgroups))
    except ValueError as exc:
        raise preflight.PreflightError(str(exc)) from None
    lib_paths: dict[int, str] = {}  # lib_id -> path, grows as discovery attaches files
    discovery = LibraryDiscovery(program, lib_paths, cfg.rescan_interval_seconds,
                                 wanted=capture_filter(cfg.pids, cfg.comms, cfg.cgroups))
    # configured files and the loader cache's; then running processes (those the filters let through),
    # by name or by the SSL_* symbols they export (node carries OpenSSL itself)
    discovery.attach(libraries.discover(cfg.extra_libraries, scan=cfg.discover_libraries, maps=False))
    if cfg.discover_libraries:
        discovery.rescan()
    usable = [a for a in program.attached.values() if a.usable]
    if not usable and not cfg.discover_libraries:
        raise preflight.PreflightError("no library could be probed: see the warnings above")
    if not usable:
        log.warning("no TLS library in use yet: waiting for processes that load one")
    try:
        cgroup_root = cgroup2_root()
    except ValueError:
        cgroup_root = None
    pods = PodMetadataSource.from_config(cfg)

    def pod_lookup(pod_uid: str, container_id: str | None):
        found = pods.lookup(pod_uid, container_id)
        return (found.pod_name, found.namespace, found.container_name) if found else None

    registry = ProcessRegistry(cgroups=CgroupPaths(cgroup_root),
                               pod_lookup=pod_lookup if pods.enabled else None)
    discovery.on_exec = registry.on_exec
    discovery.on_exit = registry.on_exit
    run_id = f"{program.gen_seed:x}"
    mono_to_wall = time.clock_gettime_ns(time.CLOCK_REALTIME) - time.clock_gettime_ns(time.CLOCK_MONOTONIC)
    use_jemalloc()
    warm_up()
    decoder = RecordDecoder(cfg.node_name, mono_to_wall, lib_paths, socket_table.lookup)
    writer = SegmentWriter(
        cfg.segments_dir, cfg.node_name, run_id, lib_paths, cfg.segment_max_bytes, cfg.segment_max_seconds,
        cfg.segments_max_total_bytes,
    )

    pending: list[bytes] = []
    pending_bytes = 0

    if ringbuf_reader.SUPPORTED:
        reader = ringbuf_reader.RingBufferReader(program.ring_buffer_fd(), cfg.ringbuf_bytes)

        def drain() -> None:
            nonlocal pending_bytes
            pending_bytes += reader.read(pending)
    else:  # libbpf's consumer: one ctypes callback per record
        def on_record(_ctx, data, size):
            nonlocal pending_bytes
            pending.append(ctypes.string_at(data, size))
            pending_bytes += size

        program.open_ring_buffer(on_record)
        drain = program.drain

    stop = False

    def on_signal(signum, _frame):
        nonlocal stop
        stop = True
        log.info("received %s: flushing and stopping", signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    def totals() -> dict:
        t = program.counters()
        t.update(
            **writer.counters(),
            unexplained_gap_bytes=decoder.unexplained_gap_bytes,
            malformed_records=decoder.malformed_records,
        )
        return t

    writer.stats_provider = totals

    def probed() -> int:
        return sum(1 for a in list(program.attached.values()) if a.usable)  # discovery adds meanwhile

    # Compression and file writes run in their own thread (pyarrow releases the GIL there), so
    # that draining the ring buffer never waits for a segment flush: at 150 MB/s a 32 MiB ring
    # buffer fills in 0.2 s. Decoding is vectorized and stays on the draining thread.
    batches: queue.Queue = queue.Queue(maxsize=MAX_QUEUED_BATCHES)
    writer_errors: list[BaseException] = []

    def write_batches() -> None:
        # Each segment describes the processes of its rows itself (process rows), so that one
        # segment read alone still says who made its calls.
        described: set[int] = set()
        segments_seen = writer.segments_written
        try:
            while True:
                try:
                    table = batches.get(timeout=0.5)
                except queue.Empty:
                    writer.maybe_rotate()
                    continue
                if table is None:
                    break
                if writer.segments_written != segments_seen:
                    described.clear()
                    segments_seen = writer.segments_written
                new = set(pc.unique(table["pid"]).to_pylist()) - described
                if new:
                    table = pa.concat_tables([registry.rows(new, cfg.node_name), table])
                    described |= new
                writer.write(table)
        except BaseException as exc:  # reported by the main thread, which then stops
            writer_errors.append(exc)
            log.error("segment writer failed: %s", exc)
        finally:
            writer.close()

    writer_thread = threading.Thread(target=write_batches, name="segment-writer", daemon=True)
    writer_thread.start()

    def flush() -> None:
        nonlocal pending, pending_bytes
        raws, pending = pending, []
        pending_bytes = 0
        if raws and not writer_errors:
            table = decoder.decode(raws)
            registry.describe_new(table)
            batches.put(table)

    metrics.update(totals(), probed())
    metrics.ready = True
    if cfg.ready_file:
        _write_ready_file(cfg.ready_file, {
            "pid": os.getpid(),
            "run_id": run_id,
            "libraries": [{"lib_id": a.lib_id, "path": a.library.display_path, "symbols": a.symbols}
                          for a in program.attached.values()],
            **({"metrics_port": metrics_server.port} if metrics_server else {}),
        })
    stop_discovery = threading.Event()
    if cfg.discover_libraries:
        events = (ringbuf_reader.RingBufferReader(program.proc_events_fd(), PROC_EVENTS_BYTES).read
                  if ringbuf_reader.SUPPORTED else None)
        discovery_thread = run_in_thread(discovery, events, stop_discovery)
    log.info("recording to %s (run %s, %d libraries probed)", cfg.segments_dir, run_id, len(usable))

    started = time.monotonic()
    last_flush = last_stats = last_metrics = started
    try:
        while not stop:
            time.sleep(DRAIN_INTERVAL_SECONDS)
            t0 = time.monotonic()
            drain()
            now = time.monotonic()
            if now - t0 > 0.1:
                log.warning("draining the ring buffer took %.2f s", now - t0)
            if cfg.duration is not None and now - started >= cfg.duration:
                log.info("duration of %.1f s reached", cfg.duration)
                break
            if now - last_flush >= cfg.flush_interval_seconds or pending_bytes >= MAX_BATCH_BYTES:
                flush()
                last_flush = now
                if time.monotonic() - now > 0.1:
                    log.warning("decoding a batch took %.2f s (%d records queued for writing)",
                                time.monotonic() - now, batches.qsize())
            if writer_errors:
                raise preflight.PreflightError(f"cannot write segments: {writer_errors[0]}")
            if now - last_stats >= cfg.stats_interval_seconds:
                log.info("totals %s", json.dumps(totals(), sort_keys=True))
                last_stats = now
            if now - last_metrics >= METRICS_INTERVAL_SECONDS:
                metrics.update(totals(), probed())
                last_metrics = now
    finally:
        metrics.ready = False
        stop_discovery.set()
        if cfg.discover_libraries:
            discovery_thread.join()
        drain()
        flush()
        batches.put(None)
        writer_thread.join()
        final = totals()
        log.info("final totals %s", json.dumps(final, sort_keys=True))
        metrics.update(final, probed())
        program.close()
        if metrics_server is not None:
            metrics_server.close()
        if cfg.ready_file:
            try:
                cfg.ready_file.unlink()
            except FileNotFoundError:
                pass
    return 0
