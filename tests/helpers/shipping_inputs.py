"""Inputs of the shipping tests: real segments published by the recorder's own writer, and upload
settings with fast retries."""

from __future__ import annotations

import random
from pathlib import Path

import pyarrow as pa

from helpers.segment_tables import segment_table
from recorder.shipping.config import UploadConfig
from recorder.store.writer import SegmentWriter

RUN_ID = "6617c2100ef9f"  # hex, as the recorder's run ids are


def upload_config(url: str, bucket: str, **kw) -> UploadConfig:
    """Retries after tens of milliseconds, so that outages and faults are quick to test."""
    kw = {"enabled": True, "bucket": bucket, "endpoint_url": url, "region": "us-east-1",
          "prefix": "fleet/raw", "poll_seconds": 0.05, "retry_initial_seconds": 0.02,
          "retry_max_seconds": 0.1, "connect_timeout_seconds": 2, "read_timeout_seconds": 5, **kw}
    return UploadConfig(**kw)


def batch(seed: int, rows: int, size: int) -> pa.Table:
    """Deterministic incompressible rows, every schema column present (segments as large as asked)."""
    rnd = random.Random(seed)
    given = {"kind": ["data"] * rows, "ts_mono_ns": list(range(rows)), "conn_id": [f"c{seed}"] * rows,
             "direction": ["egress"] * rows, "stream_offset": [r * size for r in range(rows)],
             "length": [size] * rows, "data": [rnd.randbytes(size) for _ in range(rows)]}
    return segment_table(rows, given)


class Recorder:
    """The recorder's writer on a directory: each batch is published as one segment (rotation at every
    batch), with the recorder's names, footer and quota."""

    def __init__(self, directory: Path, max_total_bytes: int = 0, node: str = "worker-1"):
        self.directory = directory
        self.writer = SegmentWriter(directory, node, RUN_ID, {0: "/lib/libssl.so.3"}, max_bytes=1,
                                    max_seconds=3600, max_total_bytes=max_total_bytes)
        self.seed = 0

    def publish(self, count: int = 1, rows: int = 20, size: int = 1000) -> list[Path]:
        """Publish `count` segments (rows x size bytes of data each); their paths."""
        before = set(self.directory.glob("*.parquet"))
        for _ in range(count):
            self.seed += 1
            self.writer.write(batch(self.seed, rows, size))
        self.writer.close()  # waits for the conversions: every segment is published
        return sorted(set(self.directory.glob("*.parquet")) - before)

    def counters(self) -> dict[str, int]:
        return self.writer.counters()
