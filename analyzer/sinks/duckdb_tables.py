"""DuckDB output (`oisp-analyze ... --duckdb FILE`): tables for notebooks and SQL.

- `events`: one row per OISP event, the key fields as columns and the whole event as JSON text
- `ai_calls`: one row per AI call (request joined to its response by request_id)
- `exchanges`: one row per HTTP exchange (metadata; bodies stay in --exchanges)
- `connections`: one row per TLS connection seen
- `processes`: one row per process (node, pid) that made TLS connections

Rows are appended in Arrow batches of at most BATCH rows and about FLUSH_BYTES bytes, so memory
stays bounded however long the input and however large its prompts. Event columns have fixed types
(EVENT_TYPES): a value of another type, which a captured body can put in an event (`"model": 123`),
is coerced or nulled and counted, never a reason to stop. The file is created 0600 and never through
a link (`_replace`); DuckDB's own files (its WAL) are created under a 0077 umask."""

from __future__ import annotations

import json
import math
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa

from analyzer.http.redaction import redact_cmdline, redact_path, redact_text
from analyzer.model import ConnectionInfo, Exchange
from analyzer.sinks.sink import OUTPUT_MODE, OutputFileError, Sink
from contract.identity import ProcessIdentity

BATCH = 5000
FLUSH_BYTES = 16 << 20  # rows held before they are written: a byte budget as well as BATCH


_INTS = ("fd", "peer_port", "local_port", "ppid", "pid", "status", "status_code", "stream_id",
         "prompt_tokens", "completion_tokens", "total_tokens", "cached_tokens", "reasoning_tokens")
_NULL_TYPES = {name: pa.int64() for name in _INTS} | {
    "cost_usd": pa.float64(), "latency_ms": pa.float64(), "ttft_ms": pa.float64(), "streaming": pa.bool_(),
    "success": pa.bool_(), "tokens_estimated": pa.bool_()}


_STR, _INT, _FLOAT, _BOOL = pa.string(), pa.int64(), pa.float64(), pa.bool_()
# the events table's columns, in order, with the types their values have when the events are well formed
EVENT_TYPES = {
    **dict.fromkeys(("event_id", "event_type", "ts", "request_id", "node"), _STR), "pid": _INT,
    **dict.fromkeys(("process_name", "exe", "container_id", "pod_uid", "pod_name", "pod_namespace",
                     "workload_kind", "workload_name", "service_account", "container_image", "server_name",
                     "provider", "provider_id", "endpoint", "model", "request_type"), _STR),
    "streaming": _BOOL, "status_code": _INT, "success": _BOOL, "error_type": _STR, "finish_reason": _STR,
    **dict.fromkeys(("prompt_tokens", "completion_tokens", "total_tokens", "cached_tokens",
                     "reasoning_tokens"), _INT),
    "tokens_estimated": _BOOL, "cost_usd": _FLOAT, "latency_ms": _INT, "ttft_ms": _INT,
    **dict.fromkeys(("completeness", "confidence", "event_json"), _STR)}
_INT64 = range(-(1 << 63), 1 << 63)


def coerce(value, type_: pa.DataType) -> tuple[object, bool]:
    """(the value as the column's type holds it, whether it had to be changed): a number or boolean
    in a string column becomes its JSON text; whatever else does not fit becomes null."""
    if value is None:
        return None, False
    if type_ == _STR:
        if isinstance(value, str):
            return value, False
        ok = isinstance(value, (bool, int)) or isinstance(value, float) and math.isfinite(value)
        return (json.dumps(value) if ok else None), True
    if type_ == _BOOL:
        return (value, False) if isinstance(value, bool) else (None, True)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None, True
    if type_ == _FLOAT:
        return float(value), False
    return (value, False) if isinstance(value, int) and value in _INT64 else (None, True)


def _row_bytes(row: dict) -> int:
    """About what a row holds in memory: its strings and bytes, 8 for any other value."""
    return sum(len(v) if isinstance(v, (str, bytes)) else 8 for v in row.values())


@contextmanager
def _private_files() -> Iterator[None]:
    """Whatever DuckDB creates meanwhile (the database, its WAL) is for this user only."""
    old = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(old)


def _replace(path: Path) -> None:
    """Make way for a new database at `path`: what is there (and a WAL DuckDB would replay into it)
    is removed if it is a regular file of this user; a link, a device or another's file is refused."""
    for p in (path, Path(f"{path}.wal")):
        try:
            st = os.lstat(p)
        except FileNotFoundError:
            continue
        if not stat.S_ISREG(st.st_mode):
            raise OutputFileError(f"cannot write {p}: not a regular file (a link is never followed)")
        if st.st_uid != os.geteuid():
            raise OutputFileError(f"cannot write {p}: owned by uid {st.st_uid}, not by this user")
        p.unlink()


def _make_private(path: Path) -> None:
    """The database DuckDB just created, 0600 before any row is written, checked to be the regular
    file of this user it should be (nothing was swapped in between)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
            raise OutputFileError(f"cannot write {path}: not a regular file of this user")
        os.fchmod(fd, OUTPUT_MODE)
    finally:
        os.close(fd)


def _get(d: dict, *path):
    for p in path:
        if not isinstance(d, dict):
            return None
        d = d.get(p)
    return d


class DuckDBSink(Sink):
    wants_events = True

    def __init__(self, path: Path):
        import duckdb  # here: the parallel path imports this module for its rows (parallel/recording.py),
        # and a run without --duckdb need not pay duckdb's import (70 ms)

        _replace(path)
        with _private_files():
            self.con = duckdb.connect(str(path))
        try:
            _make_private(path)
        except BaseException:
            self.con.close()
            raise
        self.rows: dict[str, list[dict]] = {"events": [], "exchanges": [], "connections": []}
        self.pending_bytes = dict.fromkeys(self.rows, 0)  # of the rows held, per table
        self.peak_pending_bytes = 0  # the most held at once (tests check the budget with it)
        self.flushes = 0
        self.coerced: dict[str, int] = {}  # event column -> values of another type coerced or nulled

    def write_exchange(self, x: Exchange) -> None:
        self._add("exchanges", {
            "node": x.connection.node, "conn_id": x.connection.conn_id, "pid": x.connection.pid,
            "comm": x.connection.comm, "role": x.connection.role, "http_version": x.http_version,
            "sequence": x.sequence, "stream_id": x.stream_id, "method": x.method,
            "authority": redact_text(x.authority) if x.authority else None, "path": redact_path(x.path),
            "status": x.status, "complete": x.complete,
            "request_start_ns": x.request.start_ns, "request_end_ns": x.request.end_ns,
            "response_first_byte_ns": x.response.start_ns, "response_end_ns": x.response.end_ns,
            "request_body_bytes": len(x.request.body), "response_body_bytes": len(x.response.body),
            "headers_reliable": x.request.headers_reliable and x.response.headers_reliable,
            "notes": redact_text("; ".join(x.notes)) or None,  # a parse error's note may quote captured bytes
        })

    def write_events(self, x: Exchange, events: list[dict]) -> None:
        for ev in events:
            self.add_event(ev)

    def add_event(self, ev: dict) -> None:
        d = ev.get("data")
        d = d if isinstance(d, dict) else {}
        row = {
            "event_id": ev["event_id"], "event_type": ev["event_type"], "ts": ev["ts"],
            "request_id": d.get("request_id"), "node": _get(ev, "host", "hostname"),
            "pid": _get(ev, "process", "pid"), "process_name": _get(ev, "process", "name"),
            "exe": _get(ev, "process", "exe"), "container_id": _get(ev, "host", "container", "id"),
            "pod_uid": _get(ev, "host", "k8s", "pod_uid"), "pod_name": _get(ev, "host", "k8s", "pod_name"),
            "pod_namespace": _get(ev, "host", "k8s", "namespace"),
            "workload_kind": _get(ev, "host", "k8s", "workload_kind"),
            "workload_name": _get(ev, "host", "k8s", "workload_name"),
            "service_account": _get(ev, "host", "k8s", "service_account"),
            "container_image": _get(ev, "host", "container", "image"),
            "server_name": _get(ev, "attrs", "server_name"),
            "provider": _get(d, "provider", "name"), "provider_id": _get(ev, "attrs", "provider_id"),
            "endpoint": _get(d, "provider", "endpoint"), "model": _get(d, "model", "id"),
            "request_type": d.get("request_type"), "streaming": d.get("streaming"),
            "status_code": d.get("status_code"), "success": d.get("success"),
            "error_type": _get(d, "error", "type"), "finish_reason": d.get("finish_reason"),
            "prompt_tokens": _get(d, "usage", "prompt_tokens"),
            "completion_tokens": _get(d, "usage", "completion_tokens"),
            "total_tokens": _get(d, "usage", "total_tokens"),
            "cached_tokens": _get(d, "usage", "cached_tokens"),
            "reasoning_tokens": _get(d, "usage", "reasoning_tokens"),
            "tokens_estimated": _get(d, "usage", "estimated"),
            "cost_usd": _get(d, "usage", "total_cost_usd"), "latency_ms": d.get("latency_ms"),
            "ttft_ms": d.get("time_to_first_token_ms"),
            "completeness": _get(ev, "confidence", "completeness"),
            "confidence": _get(ev, "confidence", "level"),
            "event_json": json.dumps(ev, sort_keys=True, separators=(",", ":")),
        }
        for name, type_ in EVENT_TYPES.items():
            row[name], changed = coerce(row[name], type_)
            if changed:
                self.coerced[name] = self.coerced.get(name, 0) + 1
        self._add("events", row)

    def write_connection(self, c: ConnectionInfo) -> None:
        row = {k: getattr(c, k) for k in (
            "node", "conn_id", "pid", "tid", "comm", "uid", "cgroup_id", "lib_path", "seen_from_start",
            "closed", "first_ts_ns", "last_ts_ns", "protocol", "role", "egress_bytes", "ingress_bytes",
            "missing_bytes", "server_name", "fd", "peer_ip", "peer_port", "local_ip", "local_port",
            "socket_source", "tls_stack")}
        p = c.process or ProcessIdentity()
        row.update({k: getattr(p, k) for k in (
            "ppid", "exe", "cgroup_path", "container_id", "container_runtime", "pod_uid", "pod_name",
            "pod_namespace", "container_name", "service_account", "workload_kind", "workload_name",
            "container_image", "pod_labels")})
        row["cmdline"] = " ".join(redact_cmdline(p.cmdline)) if p.cmdline else None
        self._add("connections", row)

    def add_row(self, table: str, row: dict) -> None:
        """A row this class's write_* methods made in another process (analyzer/parallel/replay.py)."""
        self._add(table, row)

    def _add(self, table: str, row: dict) -> None:
        self.rows[table].append(row)
        self.pending_bytes[table] += _row_bytes(row)
        self.peak_pending_bytes = max(self.peak_pending_bytes, sum(self.pending_bytes.values()))
        if len(self.rows[table]) >= BATCH or self.pending_bytes[table] >= FLUSH_BYTES:
            self._flush(table)

    def _flush(self, table: str) -> None:
        rows = self.rows[table]
        if not rows:
            return
        self.flushes += 1
        schema = pa.schema(list(EVENT_TYPES.items())) if table == "events" else None
        batch = pa.Table.from_pylist(rows, schema=schema)
        # A column that is null throughout the first batch would be created without a type, and a
        # later batch's values would not fit it: give such columns their type.
        for i, f in enumerate(batch.schema):
            if pa.types.is_null(f.type):
                batch = batch.set_column(i, f.name, batch[f.name].cast(_NULL_TYPES.get(f.name, pa.string())))
        self.rows[table] = []
        self.pending_bytes[table] = 0
        exists = self.con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [table]).fetchall()[0][0]
        self.con.register("batch", batch)
        with _private_files():
            if exists:
                self.con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM batch")
            else:
                self.con.execute(f"CREATE TABLE {table} AS SELECT * FROM batch")
        self.con.unregister("batch")

    def close(self) -> str:
        with _private_files():
            return self._close()

    def _close(self) -> str:
        for table in self.rows:
            self._flush(table)
        tables = self.con.execute("SELECT table_name FROM information_schema.tables").fetchall()
        have = {r[0] for r in tables}
        if "connections" in have:
            self.con.execute("""
                CREATE TABLE processes AS
                SELECT node, pid, any_value(comm) AS comm, any_value(uid) AS uid,
                       any_value(cgroup_id) AS cgroup_id, any_value(ppid) AS ppid, any_value(exe) AS exe,
                       any_value(cmdline) AS cmdline, any_value(cgroup_path) AS cgroup_path,
                       any_value(container_id) AS container_id,
                       any_value(container_runtime) AS container_runtime, any_value(pod_uid) AS pod_uid,
                       any_value(pod_name) AS pod_name, any_value(pod_namespace) AS pod_namespace,
                       any_value(container_name) AS container_name,
                       any_value(service_account) AS service_account,
                       any_value(workload_kind) AS workload_kind,
                       any_value(workload_name) AS workload_name,
                       any_value(container_image) AS container_image, count(*) AS connections,
                       min(first_ts_ns) AS first_ts_ns, max(last_ts_ns) AS last_ts_ns,
                       sum(egress_bytes) AS egress_bytes, sum(ingress_bytes) AS ingress_bytes
                FROM connections GROUP BY node, pid ORDER BY node, pid""")
        if "events" in have:
            self.con.execute("""
                CREATE TABLE ai_calls AS
                SELECT q.request_id, q.ts AS request_ts, q.node, q.pid, q.process_name, q.exe,
                       q.container_id, q.pod_uid, q.pod_name, q.pod_namespace, q.workload_kind,
                       q.workload_name, q.service_account, q.container_image, q.server_name, q.provider,
                       q.provider_id, q.endpoint, q.model AS model_requested, r.model AS model_returned,
                       q.request_type,
                       q.streaming, r.status_code, r.success, r.error_type, r.finish_reason, r.prompt_tokens,
                       r.completion_tokens, r.total_tokens, r.cached_tokens, r.reasoning_tokens,
                       r.tokens_estimated, r.cost_usd,
                       r.latency_ms, r.ttft_ms,
                       CASE WHEN q.completeness = 'full' AND coalesce(r.completeness, 'partial') = 'full'
                            THEN 'full' ELSE 'partial' END AS completeness
                FROM events q LEFT JOIN events r
                  ON r.request_id = q.request_id AND r.event_type = 'ai.response'
                WHERE q.event_type = 'ai.request'
                ORDER BY q.ts, q.request_id""")
        self.con.close()
        if not self.coerced:
            return ""
        where = ", ".join(f"{name} {n}" for name, n in sorted(self.coerced.items()))
        n = sum(self.coerced.values())
        return f"{n} DuckDB value(s) of an unexpected type coerced or nulled ({where})"
