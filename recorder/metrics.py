"""The recorder's Prometheus metrics (`--metrics-port`), served by contract/metrics_server.py."""

from __future__ import annotations

import os
from pathlib import Path

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily


def directory_bytes(path: Path) -> int:
    """Bytes of the regular files directly in a directory (segments, in-progress streams, leftovers)."""
    total = 0
    try:
        with os.scandir(path) as it:
            for entry in it:
                try:
                    if entry.is_file(follow_symlinks=False):
                        total += entry.stat(follow_symlinks=False).st_size
                except FileNotFoundError:
                    pass  # published, converted or deleted meanwhile
    except FileNotFoundError:
        return 0
    return total


# The recorder's running totals (run.py totals(), logged as `totals {...}`), each a counter.
_HELP = {
    "records": "records written to the ring buffer by the probes",
    "bytes": "plaintext bytes written to the ring buffer",
    "calls": "TLS calls that moved bytes",
    "dropped_records": "records lost because the ring buffer was full",
    "dropped_bytes": "bytes lost because the ring buffer was full",
    "truncated_bytes": "bytes over the per-call capture limit (recorded as gaps)",
    "fault_bytes": "bytes the kernel could not read from the application",
    "unexplained_gap_bytes": "offset jumps found in user space",
    "malformed_records": "ring-buffer records that could not be decoded",
    "rows_written": "rows written to the in-progress segment",
    "segments_written": "segments closed",
    "segments_published": "segments converted to Parquet and published",
    "write_failed_batches": "batches dropped because the disk refused them",
    "write_failed_rows": "rows dropped because the disk refused them",
    "write_failed_bytes": "Arrow bytes dropped because the disk refused them",
    "quota_deleted_segments": "segments deleted for the quota or a full disk",
    "quota_deleted_bytes": "bytes of segments deleted for the quota or a full disk",
    "go_programs_probed": "Go program files whose crypto/tls is probed",
    "go_programs_unsupported": "Go program files with crypto/tls that cannot be probed (logged once each)",
    "tls_files_unsupported": "files with TLS code that cannot be probed, Go programs included (logged once "
                             "each)",
    "processes_held": "processes stopped at a file not judged yet, then resumed (hold_new_files)",
    "holds_expired": "held processes resumed by the time limit, not by discovery (should stay 0)",
}


class RecorderMetrics:
    """A prometheus collector over snapshots the recorder's main loop hands it (update()), so that a
    scrape never reads BPF maps from the server's thread."""

    def __init__(self, segments_dir: Path):
        self.segments_dir = segments_dir
        self.totals: dict[str, int] = {}
        self.libraries = 0
        self.ready = False

    def update(self, totals: dict[str, int], libraries: int) -> None:
        self.totals = dict(totals)
        self.libraries = libraries

    def collect(self):
        for name, value in sorted(self.totals.items()):
            yield CounterMetricFamily(f"oisp_recorder_{name}", _HELP.get(name, name.replace("_", " ")),
                                      value=value)
        yield GaugeMetricFamily("oisp_recorder_ready", "1 once every probe is attached, 0 before and "
                                "while stopping", value=int(self.ready))
        yield GaugeMetricFamily("oisp_recorder_libraries_probed", "TLS library files with probes attached",
                                value=self.libraries)
        yield GaugeMetricFamily("oisp_recorder_segments_dir_bytes", "bytes of the files in the segments "
                                "directory (published and in progress)",
                                value=directory_bytes(self.segments_dir))

    def registry(self) -> CollectorRegistry:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(self)
        return registry
