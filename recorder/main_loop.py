"""The recorder's data path, once everything is attached: ring buffer -> decoded records -> batches
-> segments.

The main thread drains the ring buffer every few milliseconds into `PendingRecords`, decodes them
as one batch when `flush_due` says so, and queues the decoded table. A writer thread takes the
batches, puts each segment's `process` rows before the first records of a pid (`SegmentProcesses`)
and writes them. `Recorder` ties these together; start-up and shutdown live in recorder/run.py.
"""

from __future__ import annotations

import ctypes
import json
import logging
import queue
import signal
import threading
import time
from collections.abc import Callable

import pyarrow as pa
import pyarrow.compute as pc

from recorder.capture import ringbuf
from recorder.capture.preflight import PreflightError
from recorder.capture.probes import CaptureProgram
from recorder.capture.records import RecordDecoder
from recorder.config import RecorderConfig
from recorder.identity.processes import ProcessRegistry
from recorder.metrics import RecorderMetrics
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
# The metrics endpoint serves totals the main loop snapshots this often (a scrape never reads BPF maps).
METRICS_INTERVAL_SECONDS = 1.0
# A drain or a decode slower than this is logged: the ring buffer may be overflowing meanwhile.
SLOW_SECONDS = 0.1


class PendingRecords:
    """Raw records drained from the ring buffer, not yet decoded."""

    def __init__(self) -> None:
        self.records: list[bytes] = []
        self.nbytes = 0

    def add(self, record: bytes) -> None:
        self.records.append(record)
        self.nbytes += len(record)

    def take(self) -> list[bytes]:
        """Everything pending, which is then empty."""
        records, self.records, self.nbytes = self.records, [], 0
        return records


def flush_due(now: float, last_flush: float, flush_interval: float, pending_bytes: int) -> bool:
    """Decode the pending records now: the flush interval has passed, or they are many."""
    return now - last_flush >= flush_interval or pending_bytes >= MAX_BATCH_BYTES


class SegmentProcesses:
    """Each segment describes the processes of its rows itself (process rows), so that one segment
    read alone still says who made its calls: a batch gets the rows of the pids its segment has not
    described yet, placed before its records."""

    def __init__(self, rows: Callable[[set[int]], pa.Table], segments_written: int = 0):
        self._rows = rows  # pids -> their process rows
        self._described: set[int] = set()
        self._segment = segments_written

    def add_to(self, table: pa.Table, segments_written: int) -> pa.Table:
        if segments_written != self._segment:  # a new segment began: it describes them again
            self._described.clear()
            self._segment = segments_written
        new = set(pc.unique(table["pid"]).to_pylist()) - self._described
        if new:
            table = pa.concat_tables([self._rows(new), table])
            self._described |= new
        return table


def capture_totals(program_counters: dict, writer_counters: dict, decoder: RecordDecoder) -> dict:
    """The totals logged, served as metrics and stored in each segment's metadata."""
    totals = dict(program_counters)
    totals.update(
        **writer_counters,
        unexplained_gap_bytes=decoder.unexplained_gap_bytes,
        malformed_records=decoder.malformed_records,
    )
    return totals


class Recorder:
    """Drains, decodes and writes until stopped (a signal, the duration, or a writer failure)."""

    def __init__(self, cfg: RecorderConfig, program: CaptureProgram, decoder: RecordDecoder,
                 registry: ProcessRegistry, writer: SegmentWriter, metrics: RecorderMetrics):
        self.cfg, self.program, self.decoder = cfg, program, decoder
        self.registry, self.writer, self.metrics = registry, writer, metrics
        self.pending = PendingRecords()
        self.stop = False
        # Compression and file writes run in their own thread (pyarrow releases the GIL there), so
        # that draining the ring buffer never waits for a segment flush: at 150 MB/s a 32 MiB ring
        # buffer fills in 0.2 s. Decoding is vectorized and stays on the draining thread.
        self.batches: queue.Queue = queue.Queue(maxsize=MAX_QUEUED_BATCHES)
        self.writer_errors: list[BaseException] = []
        self._writer_thread = threading.Thread(target=self.write_batches, name="segment-writer", daemon=True)
        self.drain: Callable[[], None] = self._open_ring_buffer()

    # ---- ring buffer -> pending records --------------------------------------------------------
    def _open_ring_buffer(self) -> Callable[[], None]:
        """The function that moves what the ring buffer holds into `self.pending`."""
        if ringbuf.SUPPORTED:
            reader = ringbuf.RingBufferReader(self.program.ring_buffer_fd(), self.cfg.ringbuf_bytes)

            def drain() -> None:
                self.pending.nbytes += reader.read(self.pending.records)

            return drain
        # libbpf's consumer: one ctypes callback per record
        self.program.open_ring_buffer(lambda _ctx, data, size: self.pending.add(ctypes.string_at(data, size)))
        return self.program.drain

    # ---- pending records -> decoded batches ----------------------------------------------------
    def flush(self) -> None:
        raws = self.pending.take()
        if raws and not self.writer_errors:
            table = self.decoder.decode(raws)
            self.registry.describe_new(table)
            self.batches.put(table)

    # ---- batches -> segments (writer thread) ---------------------------------------------------
    def start_writer(self) -> None:
        self._writer_thread.start()

    def write_batches(self) -> None:
        processes = SegmentProcesses(lambda pids: self.registry.rows(pids, self.cfg.node_name),
                                     self.writer.segments_written)
        try:
            while True:
                try:
                    table = self.batches.get(timeout=0.5)
                except queue.Empty:
                    self.writer.maybe_rotate()
                    continue
                if table is None:
                    break
                self.writer.write(processes.add_to(table, self.writer.segments_written))
        except BaseException as exc:  # reported by the main thread, which then stops
            self.writer_errors.append(exc)
            log.error("segment writer failed: %s", exc)
        finally:
            self.writer.close()

    # ---- totals ----------------------------------------------------------------------------------
    def totals(self) -> dict:
        return capture_totals(self.program.counters(), self.writer.counters(), self.decoder)

    def probed(self) -> int:
        return sum(1 for a in list(self.program.attached.values()) if a.usable)  # discovery adds meanwhile

    def update_metrics(self, totals: dict | None = None) -> None:
        self.metrics.update(self.totals() if totals is None else totals, self.probed())

    # ---- the loop ----------------------------------------------------------------------------------
    def on_signal(self, signum, _frame) -> None:
        self.stop = True
        log.info("received %s: flushing and stopping", signal.Signals(signum).name)

    def run(self) -> None:
        """Drain every DRAIN_INTERVAL_SECONDS until stopped; flush, log and snapshot on their timers."""
        cfg = self.cfg
        started = time.monotonic()
        last_flush = last_stats = last_metrics = started
        while not self.stop:
            time.sleep(DRAIN_INTERVAL_SECONDS)
            t0 = time.monotonic()
            self.drain()
            now = time.monotonic()
            if now - t0 > SLOW_SECONDS:
                log.warning("draining the ring buffer took %.2f s", now - t0)
            if cfg.duration is not None and now - started >= cfg.duration:
                log.info("duration of %.1f s reached", cfg.duration)
                break
            if flush_due(now, last_flush, cfg.flush_interval_seconds, self.pending.nbytes):
                self.flush()
                last_flush = now
                if time.monotonic() - now > SLOW_SECONDS:
                    log.warning("decoding a batch took %.2f s (%d records queued for writing)",
                                time.monotonic() - now, self.batches.qsize())
            if self.writer_errors:
                raise PreflightError(f"cannot write segments: {self.writer_errors[0]}")
            if now - last_stats >= cfg.stats_interval_seconds:
                log.info("totals %s", json.dumps(self.totals(), sort_keys=True))
                last_stats = now
            if now - last_metrics >= METRICS_INTERVAL_SECONDS:
                self.update_metrics()
                last_metrics = now

    def finish(self) -> dict:
        """Write what is left (the ring buffer's last records too), stop the writer thread and
        return the final totals, logged."""
        self.drain()
        self.flush()
        self.batches.put(None)
        self._writer_thread.join()
        final = self.totals()
        log.info("final totals %s", json.dumps(final, sort_keys=True))
        return final
