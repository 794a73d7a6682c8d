"""Live mode (`oisp-analyze DIR --follow --out events.jsonl`): read segments as the recorder
publishes them, keep connections open across segments, write each event once, survive restarts.

A segment that matches `*.parquet` is complete (the recorder publishes by renaming), so the
directory is polled and new names are read in name order. After each segment the events file is
synced and a checkpoint written (analyzer/live/checkpoint.py). A restart re-reads the processed segments
from the first one of the oldest connection still open, dropping the rows of connections already
handed out, and skips events whose ids were written already. docs/analyzer.md explains why that
writes every event exactly once.

A segment whose reading or analysis raises (a bug, or a file that passes the reader's checks and
still breaks a parser) is set aside rather than stopping live mode, which would then crash-loop on
it: logged once, counted (`segments_failed`), recorded in the checkpoint as processed and failed,
and never read again, not even by a restart's re-reading. Events it made before raising stay
written. The rule for connections: every connection open when it raised is ended there, as if
handed out (`ended` at that segment; its unwritten exchanges are lost, counted in
`connections_dropped`), since which one broke is unknown and no parser state can be trusted. Their
rows in later segments start them afresh, numbering their exchanges on (`resumable`) so that event
ids stay unique; no connection open afterwards began before the failed segment, so a restart never
re-reads it and makes what the first run made. A failure while writing the exchanges of idle
connections ends the open connections the same way, at the last segment read. Errors writing the
events file or the checkpoint are not a segment's fault: they stop live mode (exit code 1).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from analyzer.live import checkpoint
from analyzer.live.checkpoint import ALWAYS, Checkpoint, CheckpointError, Key
from analyzer.live.metrics import FollowStats
from analyzer.live.stop_flag import StopFlag
from analyzer.model import ConnectionInfo, Exchange
from analyzer.pipeline import Pipeline
from analyzer.segments.reader import ReadReport, one_line, read_batches, read_stream
from analyzer.sinks.events_jsonl import RotatingOutput, drop_partial_line, event_ids_after, event_line
from analyzer.streams.tracker import MAX_RESUMABLE
from contract import segment_format as sf
from contract import segment_names

log = logging.getLogger("oisp.analyze")


class FollowError(RuntimeError):
    """Live mode cannot go on (a checkpoint of another directory, an events file not ours)."""


class OutputError(FollowError):
    """The events file cannot be written (disk full, ...): no segment is set aside for that."""


@dataclass
class FollowOptions:
    segments_dir: Path
    output: Path
    poll_seconds: float = 1.0
    idle_seconds: float = 5.0  # finished exchanges of a connection quiet this long are written
    connection_timeout_seconds: float = 900.0  # a connection without a row this long (capture time) ends
    output_max_bytes: int = 100 * 1024 * 1024  # 0: never rotate
    output_keep: int = 5
    # read the segment the recorder is writing, batch by batch, before it is published (events within
    # a poll of the recorder's flush, not a segment's age)
    read_in_progress: bool = True


def list_segments(directory: Path) -> list[str]:
    """Names of the published segments directly in the directory, sorted (node, then time)."""
    try:
        with os.scandir(directory) as it:
            return sorted(e.name for e in it if e.name.endswith(".parquet") and not e.name.startswith(".")
                          and e.is_file())
    except FileNotFoundError:
        return []


def list_in_progress(directory: Path) -> list[str]:
    """The names the segments being written in the directory will be published under (NAME.parquet for
    a `.NAME.arrows.inprogress` stream), sorted."""
    try:
        with os.scandir(directory) as it:
            names = [segment_names.hidden_name(Path(e.name), segment_names.IN_PROGRESS_SUFFIX) for e in it]
    except FileNotFoundError:
        return []
    return sorted(n + sf.SEGMENT_SUFFIX for n in names if n and segment_names.is_name(n))


def without_connections(batch: pa.RecordBatch, keys: set[Key]) -> pa.RecordBatch:
    """The batch less the rows of these connections (process rows, with no conn_id, stay)."""
    by_node: dict[str, list[str]] = {}
    for node, conn_id in keys:
        by_node.setdefault(node, []).append(conn_id)
    nodes = batch.column("node").cast(pa.string())
    conns = batch.column("conn_id").cast(pa.string())
    drop = None
    for node, ids in by_node.items():
        hit = pc.and_(pc.equal(nodes, node), pc.is_in(conns, value_set=pa.array(ids, pa.string())))
        drop = hit if drop is None else pc.or_(drop, hit)
    return batch.filter(pc.invert(pc.fill_null(drop, False)))


class Follower:
    """State of the live analyzer between two segments; run() drives it."""

    def __init__(self, opts: FollowOptions, cfg, stats: FollowStats):
        self.opts = opts
        self.stats = stats
        # events are built by the pipeline, as in one-shot mode; the events file is written here, once
        # per event id, and the pipeline's sinks (OTLP, once open_export is called) get what was written
        self.pipeline = Pipeline(cfg, on_close=self._on_close, export=False)
        self.cp_path = checkpoint.path_for(opts.output)
        self.tracker = self.pipeline.tracker
        self.processed: set[str] = set()
        self.failed: set[str] = set()  # processed, but set aside: reading them raised
        self.ended: dict[Key, str] = {}
        self.written: dict[str, str] = {}
        self.input_now_ns = 0
        self.tag = ""  # the segment being read (or last read): tags what happens now
        self.listing: list[str] = []
        self.in_progress: list[str] = []  # segments being written (their published names)
        # rows of a segment read from its stream before it was published: skipped when it is read
        self.partial: dict[str, int] = {}
        self.to_reread: list[str] = []
        self.out: RotatingOutput | None = None

    # ---- start ---------------------------------------------------------------------------------
    def start(self) -> None:
        """Load the checkpoint, find what was written after it, open the events file; the segments
        to re-read are in self.to_reread (replay() reads them)."""
        seg_dir = str(self.opts.segments_dir.resolve())
        cp = self._load_checkpoint()
        if cp is not None and cp.segments_dir != seg_dir:
            raise FollowError(f"checkpoint {self.cp_path} belongs to segments directory {cp.segments_dir}, "
                              f"not {seg_dir}: use another --out, or remove the checkpoint to start over")
        self.opts.output.parent.mkdir(parents=True, exist_ok=True)
        cut = drop_partial_line(self.opts.output)
        if cut:
            log.warning("%s ended in a line cut short by a kill: %d bytes removed (that event is written "
                        "again)", self.opts.output, cut)
        self.listing = list_segments(self.opts.segments_dir)
        try:
            after = event_ids_after(self.opts.output, self.opts.output_keep, cp.output if cp else None)
        except OSError as exc:
            raise FollowError(str(exc)) from None
        if cp is None:
            cp = Checkpoint(segments_dir=seg_dir)
            if after:
                log.info("no checkpoint: reading every segment, %d events already in %s are not written "
                         "again", len(after), self.opts.output)
        # ids written after the checkpoint are kept until every segment present now has been read
        # (one of them made them, maybe one still being written) and no connection open then is still open
        self.in_progress = list_in_progress(self.opts.segments_dir)
        recovered_tag = max([*self.listing, *self.in_progress], default="")
        self.written = dict(cp.written)
        for event_id in after - cp.written.keys():
            self.written[event_id] = recovered_tag
        self.processed = set(cp.processed)
        self.failed = cp.failed & self.processed
        self.ended = dict(cp.ended)
        self.tracker.resumable.update(cp.resumable)
        self.input_now_ns = cp.input_now_ns
        self.tag = max(self.processed, default="")
        start = cp.replay_from
        if start is not None:
            present = set(self.listing)
            self.to_reread = sorted(n for n in self.processed - self.failed if n >= start and n in present)
            for gone in sorted(n for n in cp.processed if n >= start and n not in present):
                lost = [k for k, first in cp.open.items() if first <= gone and self.ended.get(k) != ALWAYS]
                for k in lost:
                    self.ended[k] = ALWAYS
                    log.warning("connection %s of %s cannot be rebuilt: segment %s was deleted before it was "
                                "read again; its exchanges not yet written are lost", k[1], k[0], gone)
                self.stats.connections_lost += len(lost)
            log.info("checkpoint: %d segments processed; re-reading %d from %s for %d open connections; "
                     "%d events written after it", len(self.processed), len(self.to_reread), start,
                     len(cp.open), len(after))
        self.processed &= set(self.listing)
        self.failed &= self.processed
        self.out = RotatingOutput(self.opts.output, self.opts.output_max_bytes, self.opts.output_keep)

    def _load_checkpoint(self) -> Checkpoint | None:
        try:
            return checkpoint.load(self.cp_path)
        except CheckpointError as exc:
            aside = self.cp_path.with_name(self.cp_path.name + ".corrupt")
            os.replace(self.cp_path, aside)
            log.warning("checkpoint %s is unusable (%s), moved to %s: starting over from the first segment, "
                        "without writing again the events already in %s", self.cp_path, exc, aside.name,
                        self.opts.output)
            return None

    def replay(self, stop: StopFlag | threading.Event) -> bool:
        """Re-read the segments of the connections open at the checkpoint; False if stopped first."""
        for name in self.to_reread:
            if stop.is_set():
                return False
            self._guarded(name, self._read)
        self.to_reread = []
        self.stats.ready = True
        return True

    # ---- segments ------------------------------------------------------------------------------
    def pending(self) -> list[str]:
        """New segment names, in name order; updates the lag gauges."""
        self.listing = list_segments(self.opts.segments_dir)
        if self.listing:
            self.stats.newest_segment_mtime = self._mtime(self.listing[-1])
        return self._count_pending()

    def _count_pending(self) -> list[str]:
        new = [n for n in self.listing if n not in self.processed]
        self.stats.pending_segments = len(new)
        self.stats.oldest_pending_mtime = self._mtime(new[0]) if new else None
        return new

    def _mtime(self, name: str) -> float | None:
        try:
            return (self.opts.segments_dir / name).stat().st_mtime
        except FileNotFoundError:
            return None

    def process(self, name: str) -> None:
        """Read a new segment, then end the connections silent too long and write what is idle."""
        s = self.stats
        written, skipped, exchanges = s.events_written, s.events_skipped, s.exchanges
        rows = self._read(name)
        timeout_ns = int(self.opts.connection_timeout_seconds * 1e9)
        for x in self.tracker.expire(self.input_now_ns - timeout_ns):
            self._emit(x)
        self.drain()
        self.processed.add(name)
        self.stats.segments_processed += 1
        self._count_pending()
        log.info("%s: %d rows, %d exchanges, %d events written%s", name, rows, s.exchanges - exchanges,
                 s.events_written - written,
                 f", {s.events_skipped - skipped} already written" if s.events_skipped > skipped else "")

    def process_guarded(self, name: str) -> bool:
        """process(name), setting the segment aside if it raises; False then."""
        return self._guarded(name, self.process)

    def _guarded(self, name: str, step) -> bool:
        try:
            step(name)
            return True
        except FollowError:
            raise
        except Exception as exc:  # the boundary: whatever a segment makes raise
            self._set_aside(name, exc)
            return False

    def _set_aside(self, name: str, exc: Exception) -> None:
        self.processed.add(name)
        self.failed.add(name)
        self.stats.segments_failed += 1
        dropped = self._end_open(name)
        log.error("segment %s set aside, reading or analyzing it raised %s; %d open connections ended "
                  "there, their exchanges not yet written are lost", name, _reason(exc), dropped,
                  exc_info=log.isEnabledFor(logging.DEBUG))
        self._count_pending()

    def drain_guarded(self) -> int:
        """drain(), ending the open connections if it raises (the module docstring says why)."""
        try:
            return self.drain()
        except FollowError:
            raise
        except Exception as exc:
            dropped = self._end_open(self.tag)
            log.error("writing the exchanges of idle connections raised %s; %d open connections ended, "
                      "their exchanges not yet written are lost", _reason(exc), dropped,
                      exc_info=log.isEnabledFor(logging.DEBUG))
            return 1  # the state changed: checkpoint it

    def _end_open(self, tag: str) -> int:
        """End every open connection without handing anything out: as if closed at segment `tag`,
        and numbering on if it speaks again (as ConnectionTracker.expire does)."""
        resumable = self.tracker.resumable
        dropped = len(self.tracker.open)
        for key, c in list(self.tracker.open.items()):
            del self.tracker.open[key]
            self.ended[key] = tag
            resumable[key] = c.parser.sequence if c.parser is not None else c.sequence_base
            resumable.move_to_end(key)
        while len(resumable) > MAX_RESUMABLE:
            resumable.popitem(last=False)
        self.stats.connections_dropped += dropped
        self.stats.open_connections = 0
        return dropped

    def _read(self, name: str) -> int:
        self.tag = name
        self.tracker.source = name
        report = ReadReport()
        # the rows read from its stream before it was published are in the same order: not again
        self._feed(name, read_batches([self.opts.segments_dir / name], report, self.partial.pop(name, 0)))
        self.stats.rows_read += report.rows_read
        for path, problem in report.problems:
            self.stats.problems += 1
            log.warning("skipped %s: %s", path, problem)
        self.stats.open_connections = len(self.tracker.open)
        self.stats.parse_errors = self.pipeline.parse_errors
        return report.rows_read

    def _feed(self, name: str, batches) -> None:
        drop = {k for k, last in self.ended.items() if name <= last}
        for batch in batches:
            if drop:
                batch = without_connections(batch, drop)
            if batch.num_rows:
                newest = pc.max(batch.column("ts_wall")).as_py()
                self.input_now_ns = max(self.input_now_ns, newest or 0)
            for x in self.tracker.feed(batch):
                self._emit(x)
            self.stats.beat()

    def read_in_progress(self) -> int:
        """The new rows of the segment the recorder is writing: the oldest one, once every published
        segment before it is read (rows are read in the order of their segments). Its exchanges are
        handed out as they finish, before the segment is published; when it is, its rows read here are
        skipped. Nothing of this is checkpointed as read: a restart reads the segment from its start,
        and the events already written are not written again (their ids are in the events file).
        The rows read."""
        if not self.opts.read_in_progress:
            return 0
        self.in_progress = list_in_progress(self.opts.segments_dir)
        pending = [n for n in self.listing if n not in self.processed]
        for name in self.in_progress:
            if name in self.processed or name in self.listing:
                continue  # published meanwhile: read as such
            if any(p < name for p in pending):
                return 0
            before = self.stats.rows_read
            if not self._guarded(name, self._read_stream):
                self.partial.pop(name, None)
            return self.stats.rows_read - before
        return 0

    def _read_stream(self, name: str) -> None:
        self.tag = name
        self.tracker.source = name
        report = ReadReport()
        stream = segment_names.in_progress_path(self.opts.segments_dir, name[:-len(sf.SEGMENT_SUFFIX)])
        skip = self.partial.get(name, 0)
        try:
            got = read_stream(stream, skip, report)
        except FileNotFoundError:
            return  # published (or removed) since the listing
        if got.problem:
            log.debug("in-progress %s not read: %s", stream.name, got.problem)  # said when it is published
            return
        self._feed(name, got.batches)
        self.partial[name] = max(skip, got.rows)
        self.stats.rows_read += report.rows_read
        self.stats.open_connections = len(self.tracker.open)

    def drain(self) -> int:
        """Write the finished exchanges of connections idle for idle_seconds (wall clock)."""
        before = self.stats.events_written
        idle_before = time.time_ns() - int(self.opts.idle_seconds * 1e9)
        for x in self.tracker.drain(idle_before):
            self._emit(x)
        return self.stats.events_written - before

    def _emit(self, x: Exchange) -> None:
        self.stats.exchanges += 1
        events = self.pipeline.events_of(x)
        new = False
        for ev in events:
            event_id = ev["event_id"]
            if event_id in self.written:
                self.stats.events_skipped += 1
            else:
                try:
                    self.out.write(event_line(ev))
                except OSError as exc:
                    raise OutputError(f"cannot write {self.opts.output}: {exc}") from None
                self.stats.events_written += 1
                new = True
            self.written[event_id] = self.tag
        # exported when written: a call made again after a restart and already written is not sent again
        if new:
            self.pipeline.write_events(x, events)

    def _on_close(self, info: ConnectionInfo) -> None:
        # handed out: on re-reading, its rows up to this segment are dropped
        self.ended[(info.node, info.conn_id)] = self.tag

    # ---- checkpoint ----------------------------------------------------------------------------
    def checkpoint(self) -> None:
        """Sync the events file, then record where things stand (never the other way round)."""
        position = self.out.sync()
        self.stats.output_rotations = self.out.rotations
        opened = {key: c.first_source or self.tag for key, c in self.tracker.open.items()}
        # the oldest segment a restart reads: again (an open connection's first) or for the first time,
        # the one being written included (a restart reads it from its start)
        present = set(self.listing) | self.processed | set(self.in_progress) | set(self.partial)
        oldest = min([*opened.values(), *(n for n in present if n not in self.processed)], default=ALWAYS)
        self.ended = {k: last for k, last in self.ended.items() if last >= oldest}
        self.written = {i: tag for i, tag in self.written.items() if tag >= oldest}
        self.processed &= set(self.listing)
        self.failed &= self.processed
        checkpoint.save(Checkpoint(
            segments_dir=str(self.opts.segments_dir.resolve()), output=position, processed=self.processed,
            failed=self.failed,
            open=opened, ended=self.ended, resumable=dict(self.tracker.resumable), written=self.written,
            input_now_ns=self.input_now_ns), self.cp_path)

    def close(self) -> None:
        """Close the events file, then the pipeline's sinks (the exporter's summary is logged)."""
        if self.out is not None:
            self.out.close()
        for piece in self.pipeline.close():
            log.info("%s", piece)


def run(opts: FollowOptions, cfg, stats: FollowStats, stop: StopFlag | threading.Event) -> int:
    """Follow until stop is set (SIGTERM/SIGINT); the exit code."""
    follower = Follower(opts, cfg, stats)
    follower.start()
    stats.beat()
    otlp = follower.pipeline.open_export()
    if otlp is not None:
        stats.otlp = otlp.stats
        log.info("exporting AI calls over OTLP to %s", cfg.otlp.describe())
    try:
        if not follower.replay(stop):
            log.info("stopped while re-reading: the checkpoint stays as it was")
            return 0
        if not opts.segments_dir.is_dir():
            log.info("waiting for %s to appear", opts.segments_dir)
        log.info("following %s, events to %s", opts.segments_dir, opts.output)
        while not stop.is_set():
            stats.working()
            for name in follower.pending():
                if stop.is_set():
                    break
                follower.process_guarded(name)
                follower.checkpoint()
                stats.beat()
            read = follower.read_in_progress()
            if follower.drain_guarded() or read:
                follower.checkpoint()
            stats.waiting()
            stop.wait(opts.poll_seconds)
        stats.working()
        follower.checkpoint()
        log.info("stopped: %d segments, %d exchanges, %d events written, %d connections open "
                 "(checkpointed)%s", stats.segments_processed, stats.exchanges, stats.events_written,
                 len(follower.tracker.open),
                 f", {stats.segments_failed} segments set aside" if stats.segments_failed else "")
    finally:
        follower.close()
    return 0


def _reason(exc: BaseException) -> str:
    """One line: the exception's type and message."""
    return one_line(f"{type(exc).__name__}: {exc}")
