"""The recorder's start-up and shutdown: checks, probes, discovery and identity sources in order,
then the main loop (recorder/main_loop.py) until a signal or the duration, then everything closed
in the reverse order."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa

from contract.metrics_server import MetricsServer
from recorder.capture import holds, image_layers, libraries, preflight, ringbuf
from recorder.capture.discovery import LibraryDiscovery, capture_filter, run_in_thread
from recorder.capture.probes import AttachedLibrary, CaptureProgram, raise_open_files_limit
from recorder.capture.records import RecordDecoder, warm_up
from recorder.config import RecorderConfig
from recorder.identity import sockets
from recorder.identity.cgroups import cgroup2_root, cgroup_ids
from recorder.identity.pods import PodMetadataSource
from recorder.identity.processes import CgroupPaths, ProcessRegistry
from recorder.main_loop import Recorder
from recorder.metrics import RecorderMetrics
from recorder.store.salvage import salvage
from recorder.store.writer import SegmentWriter

log = logging.getLogger("oisp.record")

# Size of the exec/exit event ring buffer (BPF_RINGBUF_OUTPUT(proc_events, 64) pages).
PROC_EVENTS_BYTES = 64 * 4096


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


def ready_info(pid: int, run_id: str, attached: Iterable[AttachedLibrary], metrics_port: int | None) -> dict:
    """What the ready file says: who records, which libraries are probed, where metrics are served."""
    return {
        "pid": pid,
        "run_id": run_id,
        "libraries": [{"lib_id": a.lib_id, "path": a.library.display_path, "tls_stack": a.library.tls_stack,
                       "symbols": a.symbols}
                      for a in attached],
        **({"metrics_port": metrics_port} if metrics_port is not None else {}),
    }


def _open_program(bpf_cls, cfg: RecorderConfig) -> CaptureProgram:
    log.info("open files: up to %d (each probe is one)", raise_open_files_limit())
    program = CaptureProgram(bpf_cls, cfg)
    try:
        program.set_filters(cfg.pids, cfg.comms, cgroup_ids(cfg.cgroups))
    except ValueError as exc:
        raise preflight.PreflightError(str(exc)) from None
    return program


def _layer_root(cfg: RecorderConfig) -> Path | None:
    """Where image layers are looked for (the host's root), or None: not looked for."""
    if not cfg.scan_image_layers or not cfg.discover_libraries or cfg.pids or cfg.comms or cfg.cgroups:
        return None
    root = image_layers.host_root()
    if root is None:
        log.warning("image layers: the host's root cannot be read (/proc/1/root, /proc/2/root): "
                    "containers' libraries are probed when they are opened, not before")
    return root


def _attach_libraries(cfg: RecorderConfig, program: CaptureProgram,
                      lib_paths: dict[int, str]) -> tuple[LibraryDiscovery, int]:
    """Probe the TLS libraries there are now; returns the discovery that probes later ones and how
    many libraries are usable."""
    discovery = LibraryDiscovery(program, lib_paths, cfg.rescan_interval_seconds,
                                 wanted=capture_filter(cfg.pids, cfg.comms, cfg.cgroups),
                                 layer_root=_layer_root(cfg))
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
    return discovery, len(usable)


def _process_registry(cfg: RecorderConfig,
                      stop: threading.Event) -> tuple[ProcessRegistry, PodMetadataSource]:
    """The registry of processes, and the watch of the node's pods that names them (until closed)."""
    try:
        cgroup_root = cgroup2_root()
    except ValueError:
        cgroup_root = None
    pods = PodMetadataSource.from_config(cfg)
    pods.start(stop)  # a daemon thread: it may be inside a long watch request when the recorder stops

    def pod_lookup(pod_uid: str, container_id: str | None):
        found = pods.lookup(pod_uid, container_id)
        return found.identity_fields() if found else None

    registry = ProcessRegistry(cgroups=CgroupPaths(cgroup_root),
                               pod_lookup=pod_lookup if pods.enabled else None)
    return registry, pods


def _start_discovery(cfg: RecorderConfig, program: CaptureProgram, discovery: LibraryDiscovery,
                     stop: threading.Event) -> threading.Thread | None:
    if not cfg.discover_libraries:
        return None
    events = (ringbuf.RingBufferReader(program.proc_events_fd(), PROC_EVENTS_BYTES).read
              if ringbuf.SUPPORTED else None)
    return run_in_thread(discovery, events, stop)


def _start_holding(program: CaptureProgram) -> tuple[subprocess.Popen, int] | None:
    """Hold processes at files not judged yet, with a watchdog that resumes them should the recorder
    die holding one (recorder/capture/holds.py). None: not held (configured off, or an old kernel)."""
    if not program.holding:
        return None
    watchdog = holds.start_watchdog(program.held_map_fd())
    program.hold_new_files(True)
    log.info("processes are held at the first exec or mapping of a file until it is judged "
             "(hold_new_files; watchdog pid %d)", watchdog[0].pid)
    return watchdog


def _stop_holding(program: CaptureProgram, watchdog: subprocess.Popen, pipe: int) -> None:
    program.hold_new_files(False)
    for pid in program.held_pids():  # discovery stops next: nobody would resume them
        program.resume(pid)
    os.close(pipe)  # the watchdog's signal to exit (it finds nobody held)
    try:
        watchdog.wait(timeout=10)
    except subprocess.TimeoutExpired:
        watchdog.kill()


def record(cfg: RecorderConfig) -> int:
    """Run until SIGINT/SIGTERM or cfg.duration; returns the exit code."""
    bpf_cls = preflight.run_all()
    preflight.prepare_segments_dir(cfg.segments_dir)
    # served from here on (ready: 0), so a liveness probe answers while the program compiles
    metrics = RecorderMetrics(cfg.segments_dir)
    metrics_server = _serve_metrics(cfg, metrics)
    salvage(cfg.segments_dir)  # what a killed recorder left, published before anything new

    program = _open_program(bpf_cls, cfg)
    lib_paths: dict[int, str] = {}  # lib_id -> path, grows as discovery attaches files
    discovery, usable = _attach_libraries(cfg, program, lib_paths)
    stop_pods = threading.Event()
    registry, pods = _process_registry(cfg, stop_pods)
    discovery.on_exec = registry.on_exec
    discovery.on_exit = registry.on_exit
    run_id = f"{program.gen_seed:x}"
    mono_to_wall = time.clock_gettime_ns(time.CLOCK_REALTIME) - time.clock_gettime_ns(time.CLOCK_MONOTONIC)
    use_jemalloc()
    warm_up()
    decoder = RecordDecoder(cfg.node_name, mono_to_wall, lib_paths, sockets.lookup)
    writer = SegmentWriter(
        cfg.segments_dir, cfg.node_name, run_id, lib_paths, cfg.segment_max_bytes, cfg.segment_max_seconds,
        cfg.segments_max_total_bytes,
    )
    recorder = Recorder(cfg, program, decoder, registry, writer, metrics)  # opens the ring buffer
    signal.signal(signal.SIGTERM, recorder.on_signal)
    signal.signal(signal.SIGINT, recorder.on_signal)
    writer.stats_provider = recorder.totals
    recorder.start_writer()

    stop_discovery = threading.Event()
    discovery_thread = _start_discovery(cfg, program, discovery, stop_discovery)
    hold = _start_holding(program) if discovery_thread is not None else None
    recorder.update_metrics()
    metrics.ready = True
    if cfg.ready_file:
        _write_ready_file(cfg.ready_file, ready_info(os.getpid(), run_id, program.attached.values(),
                                                     metrics_server.port if metrics_server else None))
    log.info("recording to %s (run %s, %d libraries probed)", cfg.segments_dir, run_id, usable)
    try:
        recorder.run()
    finally:
        metrics.ready = False
        if hold is not None:
            _stop_holding(program, *hold)
        stop_discovery.set()
        if discovery_thread is not None:
            discovery_thread.join()
        if program.holding:
            log.info("held %d processes at files not judged yet (longest hold %.0f ms)",
                     program.processes_held, discovery.hold_ms_max)
        recorder.update_metrics(recorder.finish())  # its last process rows may still name pods
        pods.close(stop_pods)
        program.close()
        if metrics_server is not None:
            metrics_server.close()
        if cfg.ready_file:
            try:
                cfg.ready_file.unlink()
            except FileNotFoundError:
                pass
    return 0
