"""The shipping loop: every poll, upload the published segments not uploaded yet, oldest first, and
delete the local files whose upload is verified (once the live analyzer is done with them).

What makes it lose and duplicate nothing:
- a segment is deleted locally only after the store showed the very bytes (transfer.py), and only
  if its name still leads to the file that was uploaded (local_segment.py);
- the key depends on the segment's name only (keys.py): any retry, by this run or a later one after
  a kill, writes the same key; before uploading, a HEAD finds a segment a killed run had uploaded but
  not deleted, and nothing is sent again;
- a failure stops the pass: the segments not uploaded stay where they are, and the next pass, after
  a backoff (backoff.py), starts again from the oldest. The oldest go first because they are the next
  ones the recorder's quota would delete;
- the shipper deletes nothing else. When the store is down for long, the recorder's quota deletes
  the oldest segments as it always does (and counts them); a segment that disappears before it was
  uploaded is counted here as lost (`segments_lost`, `bytes_lost`) and logged by name. One the quota
  deletes during its upload is not lost: it is read through the descriptor opened before.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import asdict
from pathlib import Path

from recorder.shipping import transfer
from recorder.shipping.analyzer_gate import AnalyzerGate
from recorder.shipping.backoff import Backoff
from recorder.shipping.config import UploadConfig
from recorder.shipping.keys import object_key
from recorder.shipping.local_segment import NotShippable, delete_if_same, open_segment
from recorder.shipping.metrics import ShipGauges, ShipStats
from recorder.shipping.transfer import StoreError, VerifyError
from recorder.store.quota import published_segments

log = logging.getLogger("oisp.ship")

# While the store keeps failing, one warning line at most this often (each failure is counted).
FAILING_LOG_SECONDS = 60.0


class Shipper:
    def __init__(self, cfg: UploadConfig, segments_dir: Path):
        self.cfg = cfg
        self.segments_dir = segments_dir
        self.client = transfer.make_client(cfg)
        self.stats = ShipStats()
        self.gauges = ShipGauges()
        self.backoff = Backoff(cfg.retry_initial_seconds, cfg.retry_max_seconds)
        self.gate = AnalyzerGate(cfg.analyzer_checkpoint, segments_dir)
        self.pending: dict[str, int] = {}  # file name -> size: published, not uploaded yet
        self.uploaded: dict[str, tuple[int, int]] = {}  # file name -> (device, inode): uploaded, still here
        self._retrying: set[str] = set()  # file names whose last attempt failed
        self._refused: set[str] = set()  # not shippable: left alone (logged once)
        self._unreadable: set[str] = set()  # reading them failed (logged once)
        self._failing_since: float | None = None
        self._failing_logged = 0.0

    # ---- one pass ------------------------------------------------------------------------------
    def run_pass(self, stop: threading.Event | None = None) -> float:
        """Look at the directory once: upload, verify, delete. The seconds to wait before the next pass
        (the poll interval, or the backoff after a failure)."""
        listing = {path.name: size for path, size in published_segments(self.segments_dir)}
        self._forget_vanished(listing)
        for name, size in listing.items():
            if name not in self.uploaded and name not in self._refused:
                self.pending[name] = size
        done_with = self.gate.done_with() if self.cfg.delete_after_upload else None
        self._delete_uploaded(done_with)
        try:
            for name in sorted(self.pending):
                if stop is not None and stop.is_set():
                    break
                self._ship(name, done_with)
        except StoreError as exc:
            return self._failed(name, exc)
        finally:
            self._update_gauges()
        return self.cfg.poll_seconds

    def _forget_vanished(self, listing: dict[str, int]) -> None:
        for name in [n for n in self.pending if n not in listing]:
            self._lost(name, self.pending[name])
        for name in [n for n in self.uploaded if n not in listing]:
            del self.uploaded[name]  # uploaded: the quota may take it, nothing is lost
        self._refused &= listing.keys()
        self._unreadable &= listing.keys()

    def _lost(self, name: str, size: int) -> None:
        del self.pending[name]
        self._retrying.discard(name)
        self.stats.segments_lost += 1
        self.stats.bytes_lost += size
        log.warning("segment %s (%d bytes) was deleted before it was uploaded (the recorder's quota or a "
                    "full disk): not shipped", name, size)

    def _ship(self, name: str, done_with) -> None:
        """Upload one segment (unless the store has it already), then delete it if it may go."""
        path = self.segments_dir / name
        key = object_key(self.cfg.prefix, name.removesuffix(".parquet"))
        try:
            if key is None:
                raise NotShippable("a name the recorder does not give segments")
            segment = open_segment(path)
        except FileNotFoundError:
            self._lost(name, self.pending[name])
            return
        except NotShippable as exc:
            self._refuse(name, str(exc))
            return
        except OSError as exc:  # a failing disk: the file stays pending, tried again at each pass
            if name not in self._unreadable:
                self._unreadable.add(name)
                log.warning("cannot read %s (%s): not uploaded, tried again at each pass", name, exc)
            return
        self._unreadable.discard(name)
        try:
            if name in self._retrying:
                self.stats.retries += 1
            self._transfer(segment, key)
            del self.pending[name]
            self._retrying.discard(name)
            self.uploaded[name] = segment.identity()
        finally:
            segment.close()
        self._succeeded()
        if done_with is not None and done_with(name):
            self._delete(name)

    def _transfer(self, segment, key: str) -> None:
        where = f"s3://{self.cfg.bucket}/{key}"
        try:
            if transfer.already_there(self.client, self.cfg.bucket, key, segment):
                self.stats.segments_already_there += 1
                log.info("segment %s is already at %s (verified): not uploaded again", segment.path.name,
                         where)
                return
            start = time.monotonic()
            transfer.upload(self.client, self.cfg.bucket, key, segment)
        except VerifyError:
            self.stats.verify_failures += 1
            self.stats.upload_failures += 1
            self._retrying.add(segment.path.name)
            raise
        except StoreError:
            self.stats.upload_failures += 1
            self._retrying.add(segment.path.name)
            raise
        seconds = time.monotonic() - start
        self.stats.segments_uploaded += 1
        self.stats.bytes_uploaded += segment.size
        log.info("uploaded %s (%d bytes) to %s in %.2f s, verified", segment.path.name, segment.size, where,
                 seconds)

    def _refuse(self, name: str, reason: str) -> None:
        self.pending.pop(name, None)
        self._retrying.discard(name)
        self._refused.add(name)
        self.stats.segments_not_shippable += 1
        log.warning("%s is not uploaded, and left in place: %s", name, reason)

    def _delete_uploaded(self, done_with) -> None:
        if done_with is None:
            return
        for name in sorted(self.uploaded):
            if done_with(name):
                self._delete(name)

    def _delete(self, name: str) -> None:
        identity = self.uploaded.pop(name)
        if delete_if_same(self.segments_dir / name, identity):
            self.stats.segments_deleted += 1
            log.debug("deleted %s: uploaded and verified", name)

    # ---- failures ------------------------------------------------------------------------------
    def _failed(self, name: str, exc: StoreError) -> float:
        delay = self.backoff.failed()
        now = time.monotonic()
        what = "verification failed" if isinstance(exc, VerifyError) else "upload failed"
        waiting = f"{len(self.pending)} segments ({sum(self.pending.values())} bytes) wait, none is deleted"
        if self._failing_since is None or isinstance(exc, VerifyError):  # a new streak, or a rare failure
            self._failing_since = self._failing_since or now
            self._failing_logged = now
            log.warning("%s: %s for %s (%s); %s; retrying in %.3g s", self.cfg.bucket_url(), what, name, exc,
                        waiting, delay)
        elif now - self._failing_logged >= FAILING_LOG_SECONDS:
            self._failing_logged = now
            log.warning("%s: still failing after %d attempts in %.0f s (%s); %s; next try in %.3g s",
                        self.cfg.bucket_url(), self.backoff.failures, now - self._failing_since, exc, waiting,
                        delay)
        else:
            log.debug("%s: %s for %s (%s); retrying in %.3g s", self.cfg.bucket_url(), what, name, exc, delay)
        return delay

    def _succeeded(self) -> None:
        if self._failing_since is not None:
            log.info("%s: the store takes segments again, after %d failed attempts in %.0f s",
                     self.cfg.bucket_url(), self.backoff.failures, time.monotonic() - self._failing_since)
            self._failing_since = None
        self.backoff.succeeded()

    def _update_gauges(self) -> None:
        g = self.gauges
        g.pending_segments = len(self.pending)
        g.pending_bytes = sum(self.pending.values())
        g.awaiting_analyzer = len(self.uploaded) if self.cfg.delete_after_upload else 0
        g.store_failing = self.backoff.failures

    # ---- the loop ------------------------------------------------------------------------------
    def totals(self) -> str:
        return json.dumps({**asdict(self.stats), **asdict(self.gauges)}, sort_keys=True)

    def run(self, stop: threading.Event) -> None:
        """Pass after pass until `stop` is set; the totals are logged every stats interval and at the end."""
        log.info("shipping %s to %s (every %g s)", self.segments_dir, self.cfg.bucket_url(),
                 self.cfg.poll_seconds)
        next_totals = time.monotonic() + self.cfg.stats_interval_seconds
        while not stop.is_set():
            delay = self.run_pass(stop)
            if time.monotonic() >= next_totals:
                log.info("totals %s", self.totals())
                next_totals = time.monotonic() + self.cfg.stats_interval_seconds
            stop.wait(delay)
        log.info("final totals %s", self.totals())
