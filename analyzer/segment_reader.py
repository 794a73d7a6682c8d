"""Read segment files batch by batch, tolerating files that are corrupt, truncated or foreign.

A file that cannot be read is reported (path and reason) and skipped; the rest are read. Memory
stays bounded by one row group at a time, whatever the number and size of the files.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from recorder import segment_format as sf

SUPPORTED_VERSIONS = {"1"}
COLUMNS = ["kind", "ts_wall", "node", "pid", "tid", "uid", "comm", "cgroup_id", "conn_id", "direction",
           "stream_offset", "length", "data", "gap_reason", "lib_path", "func"]


@dataclass
class ReadReport:
    files_read: int = 0
    rows_read: int = 0
    problems: list[tuple[str, str]] = field(default_factory=list)  # (path, what went wrong)


def read_batches(files: list[Path], report: ReadReport) -> Iterator[pa.RecordBatch]:
    """Every row group of every readable segment, in file order."""
    for path in files:
        try:
            pf = pq.ParquetFile(path)
            meta = pf.schema_arrow.metadata or {}
            version = meta.get(sf.META_VERSION, b"").decode()
            if version not in SUPPORTED_VERSIONS:
                why = f"not a segment of a supported version ({version or 'none'})"
                report.problems.append((str(path), why))
                continue
            missing = [c for c in COLUMNS if c not in pf.schema_arrow.names]
            if missing:
                report.problems.append((str(path), f"missing columns: {', '.join(missing)}"))
                continue
            for i in range(pf.num_row_groups):
                batch = pf.read_row_group(i, columns=COLUMNS)
                # integer nanoseconds: Python datetimes would lose them
                batch = batch.set_column(0 + COLUMNS.index("ts_wall"), "ts_wall",
                                         batch["ts_wall"].cast(pa.int64()))
                report.rows_read += batch.num_rows
                yield from batch.to_batches()
            report.files_read += 1
        except (OSError, pa.ArrowException) as exc:
            report.problems.append((str(path), f"unreadable: {exc}"))
