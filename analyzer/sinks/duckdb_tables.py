"""DuckDB output (`oisp-analyze ... --duckdb FILE`): tables for notebooks and SQL.

- `events`: one row per OISP event, the key fields as columns and the whole event as JSON text
- `ai_calls`: one row per AI call (request joined to its response by request_id)
- `exchanges`: one row per HTTP exchange (metadata; bodies stay in --exchanges)
- `connections`: one row per TLS connection seen
- `processes`: one row per process (node, pid) that made TLS connections

Rows are appended in Arrow batches, so memory stays bounded however long the input."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pyarrow as pa

from analyzer.http.redaction import redact_cmdline, redact_path
from analyzer.model import ConnectionInfo, Exchange
from analyzer.sinks.sink import Sink
from contract.identity import ProcessIdentity

BATCH = 5000


_INTS = ("fd", "peer_port", "local_port", "ppid", "pid", "status", "status_code", "stream_id",
         "prompt_tokens", "completion_tokens", "total_tokens", "cached_tokens", "reasoning_tokens")
_NULL_TYPES = {name: pa.int64() for name in _INTS} | {
    "cost_usd": pa.float64(), "latency_ms": pa.float64(), "ttft_ms": pa.float64(), "streaming": pa.bool_(),
    "success": pa.bool_()}


def _get(d: dict, *path):
    for p in path:
        if not isinstance(d, dict):
            return None
        d = d.get(p)
    return d


class DuckDBSink(Sink):
    wants_events = True

    def __init__(self, path: Path):
        if path.exists():
            path.unlink()
        self.con = duckdb.connect(str(path))
        self.rows: dict[str, list[dict]] = {"events": [], "exchanges": [], "connections": []}

    def write_exchange(self, x: Exchange) -> None:
        self.rows["exchanges"].append({
            "node": x.connection.node, "conn_id": x.connection.conn_id, "pid": x.connection.pid,
            "comm": x.connection.comm, "role": x.connection.role, "http_version": x.http_version,
            "sequence": x.sequence, "stream_id": x.stream_id, "method": x.method, "authority": x.authority,
            "path": redact_path(x.path), "status": x.status, "complete": x.complete,
            "request_start_ns": x.request.start_ns, "request_end_ns": x.request.end_ns,
            "response_first_byte_ns": x.response.start_ns, "response_end_ns": x.response.end_ns,
            "request_body_bytes": len(x.request.body), "response_body_bytes": len(x.response.body),
            "headers_reliable": x.request.headers_reliable and x.response.headers_reliable,
            "notes": "; ".join(x.notes) or None,
        })
        self._maybe_flush("exchanges")

    def write_events(self, x: Exchange, events: list[dict]) -> None:
        for ev in events:
            self.add_event(ev)

    def add_event(self, ev: dict) -> None:
        d = ev.get("data", {})
        self.rows["events"].append({
            "event_id": ev["event_id"], "event_type": ev["event_type"], "ts": ev["ts"],
            "request_id": d.get("request_id"), "node": _get(ev, "host", "hostname"),
            "pid": _get(ev, "process", "pid"), "process_name": _get(ev, "process", "name"),
            "exe": _get(ev, "process", "exe"), "container_id": _get(ev, "host", "container", "id"),
            "pod_uid": _get(ev, "host", "k8s", "pod_uid"), "pod_name": _get(ev, "host", "k8s", "pod_name"),
            "pod_namespace": _get(ev, "host", "k8s", "namespace"),
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
            "cost_usd": _get(d, "usage", "total_cost_usd"), "latency_ms": d.get("latency_ms"),
            "ttft_ms": d.get("time_to_first_token_ms"),
            "completeness": _get(ev, "confidence", "completeness"),
            "confidence": _get(ev, "confidence", "level"),
            "event_json": json.dumps(ev, sort_keys=True, separators=(",", ":")),
        })
        self._maybe_flush("events")

    def write_connection(self, c: ConnectionInfo) -> None:
        row = {k: getattr(c, k) for k in (
            "node", "conn_id", "pid", "tid", "comm", "uid", "cgroup_id", "lib_path", "seen_from_start",
            "closed", "first_ts_ns", "last_ts_ns", "protocol", "role", "egress_bytes", "ingress_bytes",
            "missing_bytes", "server_name", "fd", "peer_ip", "peer_port", "local_ip", "local_port",
            "socket_source")}
        p = c.process or ProcessIdentity()
        row.update({k: getattr(p, k) for k in (
            "ppid", "exe", "cgroup_path", "container_id", "container_runtime", "pod_uid", "pod_name",
            "pod_namespace", "container_name")})
        row["cmdline"] = " ".join(redact_cmdline(p.cmdline)) if p.cmdline else None
        self.rows["connections"].append(row)
        self._maybe_flush("connections")

    def _maybe_flush(self, table: str, force: bool = False) -> None:
        rows = self.rows[table]
        if not rows or (len(rows) < BATCH and not force):
            return
        batch = pa.Table.from_pylist(rows)
        # A column that is null throughout the first batch would be created without a type, and a
        # later batch's values would not fit it: give such columns their type.
        for i, f in enumerate(batch.schema):
            if pa.types.is_null(f.type):
                batch = batch.set_column(i, f.name, batch[f.name].cast(_NULL_TYPES.get(f.name, pa.string())))
        self.rows[table] = []
        exists = self.con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [table]).fetchall()[0][0]
        self.con.register("batch", batch)
        if exists:
            self.con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM batch")
        else:
            self.con.execute(f"CREATE TABLE {table} AS SELECT * FROM batch")
        self.con.unregister("batch")

    def close(self) -> str:
        for table in self.rows:
            self._maybe_flush(table, force=True)
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
                       any_value(container_name) AS container_name, count(*) AS connections,
                       min(first_ts_ns) AS first_ts_ns, max(last_ts_ns) AS last_ts_ns,
                       sum(egress_bytes) AS egress_bytes, sum(ingress_bytes) AS ingress_bytes
                FROM connections GROUP BY node, pid ORDER BY node, pid""")
        if "events" in have:
            self.con.execute("""
                CREATE TABLE ai_calls AS
                SELECT q.request_id, q.ts AS request_ts, q.node, q.pid, q.process_name, q.exe,
                       q.container_id, q.pod_uid, q.pod_name, q.pod_namespace, q.server_name, q.provider,
                       q.provider_id, q.endpoint, q.model AS model_requested, r.model AS model_returned,
                       q.request_type,
                       q.streaming, r.status_code, r.success, r.error_type, r.finish_reason, r.prompt_tokens,
                       r.completion_tokens, r.total_tokens, r.cached_tokens, r.reasoning_tokens, r.cost_usd,
                       r.latency_ms, r.ttft_ms,
                       CASE WHEN q.completeness = 'full' AND coalesce(r.completeness, 'partial') = 'full'
                            THEN 'full' ELSE 'partial' END AS completeness
                FROM events q LEFT JOIN events r
                  ON r.request_id = q.request_id AND r.event_type = 'ai.response'
                WHERE q.event_type = 'ai.request'
                ORDER BY q.ts, q.request_id""")
        self.con.close()
        return ""
