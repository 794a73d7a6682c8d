"""What a set of segments holds, per connection: the quick look `make run` shows.

The full HTTP and AI analysis builds on the same files; this summary only needs DuckDB.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

QUERY = """
SELECT node, pid, any_value(comm) AS comm, conn_id,
       bool_or(kind = 'open') AS seen_from_start,
       bool_or(kind = 'close') AS closed,
       coalesce(sum(length) FILTER (kind = 'data' AND direction = 'egress'), 0) AS egress_bytes,
       coalesce(sum(length) FILTER (kind = 'data' AND direction = 'ingress'), 0) AS ingress_bytes,
       coalesce(sum(length) FILTER (kind = 'gap'), 0) AS missing_bytes,
       any_value(lib_path) AS lib_path,
       any_value({server_name}) AS server_name,
       any_value({peer}) AS peer,
       min(ts_wall) AS first_seen
FROM read_parquet($files, union_by_name = true)
WHERE conn_id IS NOT NULL
GROUP BY node, pid, conn_id
ORDER BY first_seen, conn_id
"""


def connection_summary(files: list[Path]) -> list[dict]:
    con = duckdb.connect()
    names = [str(f) for f in files]
    have = {r[0] for r in con.execute(
        "DESCRIBE SELECT * FROM read_parquet($files, union_by_name = true)", {"files": names}).fetchall()}
    # version 1 segments have no identity columns
    query = QUERY.format(server_name="server_name" if "server_name" in have else "NULL",
                         peer="peer_ip || ':' || peer_port" if "peer_ip" in have else "NULL")
    rel = con.execute(query, {"files": names})
    cols = [d[0] for d in rel.description]
    return [dict(zip(cols, row, strict=True)) for row in rel.fetchall()]


def first_bytes(files: list[Path], conn_id: str, direction: str, limit: int = 80) -> bytes:
    """The first bytes of one stream, for a glance at what the connection carried."""
    con = duckdb.connect()
    rows = con.execute(
        "SELECT data FROM read_parquet($files, union_by_name = true) "
        "WHERE conn_id = $c AND direction = $d AND kind = 'data' "
        "ORDER BY stream_offset LIMIT 4",
        {"files": [str(f) for f in files], "c": conn_id, "d": direction},
    ).fetchall()
    return b"".join(r[0] for r in rows)[:limit]
