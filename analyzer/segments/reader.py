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

from contract import segment_format as sf

SUPPORTED_VERSIONS = set(sf.READABLE_VERSIONS)
COLUMNS = ["kind", "ts_wall", "node", "pid", "tid", "uid", "comm", "cgroup_id", "conn_id", "direction",
           "stream_offset", "length", "data", "gap_reason", "lib_path", "func"]
# Identity columns of version 2 (sni, socket and process rows); version 1 files read them as nulls.
IDENTITY_COLUMNS = ["server_name", "fd", "peer_ip", "peer_port", "local_ip", "local_port", "socket_source",
                    "ppid", "exe", "cmdline", "process_start", "cgroup_path", "container_id",
                    "container_runtime", "pod_uid", "pod_name", "pod_namespace", "container_name"]


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
            present = [c for c in IDENTITY_COLUMNS if c in pf.schema_arrow.names]
            for i in range(pf.num_row_groups):
                batch = pf.read_row_group(i, columns=COLUMNS + present)
                for name in IDENTITY_COLUMNS:
                    if name not in present:
                        batch = batch.append_column(sf.SCHEMA.field(name), pa.nulls(batch.num_rows,
                                                                                   sf.SCHEMA.field(name).type))
                # integer nanoseconds: Python datetimes would lose them
                for name in ("ts_wall", "process_start"):
                    batch = batch.set_column(batch.schema.get_field_index(name), name,
                                             batch[name].cast(pa.int64()))
                report.rows_read += batch.num_rows
                yield from batch.to_batches()
            report.files_read += 1
        except (OSError, pa.ArrowException) as exc:
            report.problems.append((str(path), f"unreadable: {exc}"))
