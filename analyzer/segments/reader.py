"""Read segment files batch by batch, tolerating files that are corrupt, truncated or foreign.

A file that cannot be read is reported in `ReadReport.problems` (path and a one-line reason) and
skipped; the rest are read. Consecutive row groups are read together up to a budget (`row_group_runs`:
rows, bytes as the file's metadata states them, and a number of row groups, since metadata may
understate sizes), so a file of many tiny row groups costs a few reads, not one per group; a row
group over the budget is read alone. Memory stays bounded by one such run at a time, whatever the
number and size of the files. What is handed on always holds what the tracker (streams/tracker.py) relies
on, whoever wrote the file:

- only regular files are opened (files.not_regular): a FIFO named `*.parquet` is skipped, not waited on;
- the file's schema must be the segment format's (contract/segment_format.py): every column read
  present, each with a compatible type (the same, or another encoding of the same values: plain or
  dictionary strings, integers of any width, ns timestamps); else the whole file is skipped;
- rows that break the format are dropped and counted (`ReadReport.rows_dropped`, and one problem
  line for the file saying how many and why), the file's other rows are read: a row needs the
  format's non-nullable columns, a known kind, a conn_id unless it is a process row, a direction
  of egress or ingress and a stream_offset on data and gap rows, data on data rows, a length on
  gap rows, and no null argument in a cmdline. Rows, not the file: a bad row is found only when
  its row group is read, after earlier row groups were handed on.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from analyzer.segments.files import kind_of, not_regular
from contract import segment_format as sf

SUPPORTED_VERSIONS = set(sf.READABLE_VERSIONS)
# What reading someone else's Parquet or Arrow bytes can raise besides Arrow's errors and I/O errors, all
# found by seeded campaigns of damaged files: MemoryError and OverflowError from lengths made huge,
# UnicodeDecodeError (a ValueError) from a column name or path that is not UTF-8
UNREADABLE = (OSError, pa.ArrowException, ValueError, MemoryError, OverflowError)
COLUMNS = ["kind", "ts_wall", "node", "pid", "tid", "uid", "comm", "cgroup_id", "conn_id", "direction",
           "stream_offset", "length", "data", "gap_reason", "lib_path", "func"]
# Identity columns of version 2 (sni, socket and process rows), 3 (tls_stack) and 5 (the workload's);
# older files read them as nulls.
IDENTITY_COLUMNS = ["server_name", "fd", "peer_ip", "peer_port", "local_ip", "local_port", "socket_source",
                    "ppid", "exe", "cmdline", "process_start", "cgroup_path", "container_id",
                    "container_runtime", "pod_uid", "pod_name", "pod_namespace", "container_name",
                    "tls_stack", "service_account", "workload_kind", "workload_name", "container_image",
                    "pod_labels"]
NOT_NULL = [c for c in COLUMNS if not sf.SCHEMA.field(c).nullable]
KINDS = [sf.KIND_DATA, sf.KIND_GAP, sf.KIND_OPEN, sf.KIND_CLOSE, sf.KIND_SNI, sf.KIND_SOCKET, sf.KIND_PROCESS]
DIRECTIONS = [sf.DIRECTION_EGRESS, sf.DIRECTION_INGRESS]
# One read (and one batch handed on) holds consecutive row groups up to these: the per-read cost
# (checks, casts, the tracker's per-batch work) is then paid per run, not per row group.
BATCH_ROWS = 65_536
BATCH_BYTES = 16 << 20  # uncompressed, as the file's metadata states it
BATCH_GROUPS = 1024  # metadata may understate sizes: this bounds what a lie can add to one read
# Only small row groups are joined: the recorder writes groups of thousands of rows, read one at a time
# as they are (joining them held 4x the memory: 545 MB against 136 MB on bench/analyzer_throughput.py,
# the metadata's sizes understating repeated bodies), while a file of tiny groups is read in runs.
SMALL_GROUP_ROWS = 1024


@dataclass
class ReadReport:
    files_read: int = 0
    rows_read: int = 0  # handed on
    rows_dropped: int = 0  # rows that break the segment format, in files otherwise read
    problems: list[tuple[str, str]] = field(default_factory=list)  # (path, what went wrong: one line)


def read_batches(files: list[Path], report: ReadReport, skip_rows: int = 0) -> Iterator[pa.RecordBatch]:
    """Every row group of every readable segment, in file order, less the rows that break the format.
    `skip_rows`: the first rows of the (one) file not handed on (live mode read them from its stream)."""
    for path in files:
        why = not_regular(path)
        if why:
            report.problems.append((str(path), why))
            continue
        try:
            yield from _read_file(path, report, skip_rows)
        except UNREADABLE as exc:
            report.problems.append((str(path), one_line(f"unreadable: {exc}")))


def _normalized(batch: pa.Table, present: list[str], dropped: dict[str, int]) -> pa.Table:
    """The rows that keep the format, the identity columns a file lacks as nulls, times as integer ns."""
    batch = _valid_rows(batch, dropped)
    for name in IDENTITY_COLUMNS:
        if name not in present:
            f = sf.SCHEMA.field(name)
            batch = batch.append_column(f, pa.nulls(batch.num_rows, f.type))
    # integer nanoseconds: Python datetimes would lose them
    for name in ("ts_wall", "process_start"):
        batch = batch.set_column(batch.schema.get_field_index(name), name, batch[name].cast(pa.int64()))
    return batch


def _dropped_problem(rows: int, dropped: dict[str, int]) -> str:
    reasons = "; ".join(f"{why}: {k}" for why, k in dropped.items())
    return f"{sum(dropped.values())} of {rows} rows dropped, breaking the segment format ({reasons})"


@dataclass
class StreamRead:
    """What read_stream found in an in-progress segment."""

    batches: list[pa.RecordBatch]  # the rows after the ones skipped, normalized as read_batches does
    rows: int  # the stream's rows in complete batches, skipped ones included (dropped ones too)
    problem: str | None = None  # why it could not be read at all (None: read, maybe nothing new)


def read_stream(path: Path, skip_rows: int, report: ReadReport) -> StreamRead:
    """The complete batches of a segment the recorder is still writing (an Arrow IPC stream, appended
    to batch by batch: contract/segment_names.py), less the first `skip_rows` rows. The batch being
    written, cut short, is where reading stops; the published segment later holds the same rows in
    the same order (recorder/store/conversion.py). Rows that break the format are counted in the
    report's rows_dropped (and said when the published segment is read)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        return StreamRead([], 0, f"not a regular file: {kind_of(mode)}")
    os.set_blocking(fd, True)
    out: list[pa.RecordBatch] = []
    rows = 0
    with os.fdopen(fd, "rb") as f:
        try:
            reader = pa.ipc.open_stream(f)
        except UNREADABLE as exc:
            return StreamRead([], 0, one_line(f"unreadable: {exc}"))
        why = schema_problem(reader.schema)
        if why:
            return StreamRead([], 0, why)
        present = [c for c in IDENTITY_COLUMNS if c in reader.schema.names]
        dropped: dict[str, int] = {}
        while True:
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                break
            except UNREADABLE:
                # the batch being written: read again at the next look (or a damaged one, a length
                # too large to allocate or read: the published segment's reader says so)
                break
            first, rows = rows, rows + batch.num_rows
            if rows <= skip_rows:
                continue
            try:
                # an IPC batch is not checked as it is read (a Parquet page is, as it is decoded): offsets
                # out of bounds would make the kernels below raise, or read outside the buffers
                batch.validate(full=True)
            except (pa.ArrowException, ValueError):
                rows = first
                break  # damaged: its rows come when the segment is published, and its reader says so
            table = pa.Table.from_batches([batch.slice(max(0, skip_rows - first))]).select(COLUMNS + present)
            table = _normalized(table, present, dropped)
            report.rows_read += table.num_rows
            out.extend(table.combine_chunks().to_batches())
        report.rows_dropped += sum(dropped.values())
    return StreamRead(out, rows)


def _read_file(path: Path, report: ReadReport, skip_rows: int = 0) -> Iterator[pa.RecordBatch]:
    # Opened without blocking, then checked again: it may have become a FIFO since its stat.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        report.problems.append((str(path), f"not a regular file: {kind_of(mode)}"))
        return
    os.set_blocking(fd, True)
    with os.fdopen(fd, "rb") as f:
        pf = pq.ParquetFile(f)
        why = schema_problem(pf.schema_arrow)
        if why:
            report.problems.append((str(path), why))
            return
        present = [c for c in IDENTITY_COLUMNS if c in pf.schema_arrow.names]
        dropped: dict[str, int] = {}
        rows = 0
        for run in row_group_runs(pf.metadata):
            listed = sum(max(pf.metadata.row_group(i).num_rows, 0) for i in run)
            if rows + listed <= skip_rows:  # live mode read these from the stream: not even decoded
                rows += listed
                continue
            batch = pf.read_row_groups(run, columns=COLUMNS + present, use_threads=False)
            first, rows = rows, rows + batch.num_rows
            if rows <= skip_rows:
                continue
            if first < skip_rows:
                batch = batch.slice(skip_rows - first)
            batch = _normalized(batch, present, dropped)
            report.rows_read += batch.num_rows
            # one batch per run (a run's table has a chunk per row group)
            batches = batch.combine_chunks().to_batches()
            # held here no longer than the consumer holds it: the next read is not made beside it
            del batch
            while batches:
                yield batches.pop(0)
    report.files_read += 1
    if dropped:
        report.rows_dropped += sum(dropped.values())
        report.problems.append((str(path), _dropped_problem(rows, dropped)))


def row_group_runs(md: pq.FileMetaData, max_rows: int | None = None, max_bytes: int | None = None,
                   max_groups: int | None = None) -> Iterator[list[int]]:
    """The file's row groups in order, as runs of consecutive small ones within the budget (default: the
    module's BATCH_*); a row group of SMALL_GROUP_ROWS or more, or over the budget, is a run of its own."""
    max_rows = BATCH_ROWS if max_rows is None else max_rows
    max_bytes = BATCH_BYTES if max_bytes is None else max_bytes
    max_groups = BATCH_GROUPS if max_groups is None else max_groups
    run: list[int] = []
    rows = size = 0
    for i in range(md.num_row_groups):
        group = md.row_group(i)
        n, b = max(group.num_rows, 0), max(group.total_byte_size, 0)
        if n >= SMALL_GROUP_ROWS:  # a run of its own
            if run:
                yield run
            yield [i]
            run, rows, size = [], 0, 0
            continue
        if run and (rows + n > max_rows or size + b > max_bytes or len(run) >= max_groups):
            yield run
            run, rows, size = [], 0, 0
        run.append(i)
        rows, size = rows + n, size + b
    if run:
        yield run


def schema_problem(schema: pa.Schema) -> str | None:
    """Why a file with this schema is not a segment the analyzer reads, or None."""
    version = (schema.metadata or {}).get(sf.META_VERSION, b"").decode(errors="replace")
    if version not in SUPPORTED_VERSIONS:
        return one_line(f"not a segment of a supported version ({version or 'none'})")
    try:
        names = schema.names
    except UnicodeDecodeError:
        return "a column name that is not UTF-8"
    missing = [c for c in COLUMNS if c not in names]
    if missing:
        return f"missing columns: {', '.join(missing)}"
    if len(set(names)) != len(names):
        return "duplicate column names"
    wrong = [f"{c} is {schema.field(c).type}, not {sf.SCHEMA.field(c).type}"
             for c in COLUMNS + IDENTITY_COLUMNS
             if c in names and not compatible(schema.field(c).type, sf.SCHEMA.field(c).type)]
    return f"columns of the wrong type: {'; '.join(wrong)}" if wrong else None


def compatible(got: pa.DataType, want: pa.DataType) -> bool:
    """Whether a column of type `got` holds the values of the format's type `want`."""
    if got == want:
        return True
    if pa.types.is_dictionary(want):  # strings, dictionary-encoded or not
        return _is_string(got.value_type if pa.types.is_dictionary(got) else got)
    if pa.types.is_integer(want):
        return pa.types.is_integer(got)
    if pa.types.is_timestamp(want):
        return pa.types.is_timestamp(got) and got.unit == want.unit
    if pa.types.is_binary(want):
        return pa.types.is_binary(got) or pa.types.is_large_binary(got)
    if pa.types.is_list(want):
        return (pa.types.is_list(got) or pa.types.is_large_list(got)) and _is_string(got.value_type)
    return False


def _is_string(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def _valid_rows(batch: pa.Table, dropped: dict[str, int]) -> pa.Table:
    """The batch less its rows that break the format, each counted under its first reason."""
    bad = None  # rows dropped so far: None while there are none (the usual case: nothing to filter)
    for why, mask in _row_checks(batch):
        new = mask if bad is None else pc.and_(mask, pc.invert(bad))
        n = pc.sum(new).as_py() or 0
        if n:
            dropped[why] = dropped.get(why, 0) + n
            bad = new if bad is None else pc.or_(bad, new)
    return batch if bad is None else batch.filter(pc.invert(bad))


def _row_checks(batch: pa.Table) -> Iterator[tuple[str, pa.ChunkedArray]]:
    """(reason, mask of the rows it applies to), in order; every mask without nulls."""
    kind = batch["kind"].cast(pa.string())

    def is_kind(*kinds: str) -> pa.ChunkedArray:
        return pc.is_in(kind, value_set=pa.array(kinds, pa.string()))  # false, not null, on nulls

    for c in NOT_NULL:
        yield f"null {c}", pc.is_null(batch[c])
    yield "unknown kind", pc.invert(is_kind(*KINDS))
    yield "null conn_id", pc.and_(pc.invert(is_kind(sf.KIND_PROCESS)), pc.is_null(batch["conn_id"]))
    stream = is_kind(sf.KIND_DATA, sf.KIND_GAP)
    direction = pc.is_in(batch["direction"].cast(pa.string()), value_set=pa.array(DIRECTIONS, pa.string()))
    yield "data or gap row without a direction of egress or ingress", pc.and_(stream, pc.invert(direction))
    yield "null stream_offset", pc.and_(stream, pc.is_null(batch["stream_offset"]))
    yield "data row with null data", pc.and_(is_kind(sf.KIND_DATA), pc.is_null(batch["data"]))
    yield "gap row with null length", pc.and_(is_kind(sf.KIND_GAP), pc.is_null(batch["length"]))
    if "cmdline" in batch.column_names:
        yield "null argument in a cmdline", _has_null_item(batch["cmdline"])


def _has_null_item(lists: pa.ChunkedArray) -> pa.ChunkedArray:
    """Per row: whether its list holds a null."""
    flat = lists.combine_chunks()
    items = pc.list_flatten(flat)
    if items.null_count == 0:  # the usual case: no mask to build row by row
        # pa.repeat, not a NumPy array: pa.array's first NumPy array imports numpy.ma (about 50 ms a run)
        return pa.chunked_array([pa.repeat(False, len(flat))])
    rows = pc.list_parent_indices(flat)
    holes = pc.filter(rows, pc.is_null(items))
    mask = pc.is_in(pa.array(range(len(flat)), pa.int64()), value_set=holes.cast(pa.int64()))
    return pa.chunked_array([mask])


def one_line(text: str) -> str:
    """A reason fit for one line of output (library messages may hold newlines)."""
    return " ".join(text.split())
