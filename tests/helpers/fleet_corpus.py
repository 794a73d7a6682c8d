"""A multi-node segment corpus for the parallel and fleet tests: the recorded fixtures (HTTP/1.1 and
HTTP/2, AI calls of several providers) copied onto several nodes with new connection ids, and hostile
connections (tests/helpers/hostile_inputs.py: broken rows, parse errors, plaintext pairs whose ends
share addresses, connection ids reused), their rows interleaved and cut into several files per node,
so that connections span files and row groups."""

from __future__ import annotations

import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from contract import segment_format as sf
from helpers.analyzer_inputs import FIXTURES
from helpers.hostile_inputs import connection_rows

NODES = ("node-a", "node-b", "node-c")
RECORDED = ("h1", "h2", "sdk", "sdk_more", "h1_v1")
# the format's columns, nullable (hostile rows have nulls where the recorder writes none: the reader
# drops those rows), ts_wall as integer nanoseconds while the rows are built
_WRITE = pa.schema([f.with_nullable(True) for f in sf.SCHEMA])
_INT_TS = _WRITE.set(_WRITE.get_field_index("ts_wall"), pa.field("ts_wall", pa.int64()))


def fixture_rows(name: str) -> list[dict]:
    """The rows of a recorded fixture, every column of the current format (nulls for later ones)."""
    rows = []
    for f in sorted((FIXTURES / "segments" / name).glob("*.parquet")):
        table = pq.read_table(f)
        for field in sf.SCHEMA:
            if field.name not in table.column_names:
                table = table.append_column(field, pa.nulls(table.num_rows, field.type))
        table = table.select(sf.SCHEMA.names)
        table = table.set_column(1, "ts_wall", table["ts_wall"].cast(pa.int64()))
        rows += table.to_pylist()
    return rows


def connections(seed: int, copies: int = 2, hostile: int = 40) -> dict[str, list[list[dict]]]:
    """node -> its connections (each a list of rows in order; process rows travel with them)."""
    recorded = [fixture_rows(name) for name in RECORDED]
    out: dict[str, list[list[dict]]] = {n: [] for n in NODES}
    for node in NODES:
        for copy in range(copies):
            for rows in recorded:
                out[node].append([{**r, "node": node,
                                   "conn_id": None if r["conn_id"] is None else f"{r['conn_id']}-{copy}"}
                                  for r in rows])
    for i in range(hostile):
        node = NODES[i % len(NODES)]
        # hostile conn_ids are 7-0..7-2 (and -srv): suffixed by i // 6, so some are reused on a node
        rows = [{**r, "node": node if r.get("node") is not None else None,
                 "conn_id": None if r.get("conn_id") is None else f"{r['conn_id']}-h{i // 6}"}
                for r in connection_rows(random.Random(seed * 1000 + i))]
        out[node].append(rows)
    return out


def interleave(rng: random.Random, conns: list[list[dict]]) -> list[dict]:
    """The connections' rows in one sequence, each connection's in its own order."""
    queues = [list(c) for c in conns if c]
    order = [i for i, q in enumerate(queues) for _ in q]
    rng.shuffle(order)
    positions = [0] * len(queues)
    out = []
    for i in order:
        out.append(queues[i][positions[i]])
        positions[i] += 1
    return out


def _table(rows: list[dict]) -> pa.Table:
    fixed = [{name: r.get(name) for name in sf.SCHEMA.names} for r in rows]
    for r in fixed:
        if r["ts_mono_ns"] is None and isinstance(r["ts_wall"], int):
            r["ts_mono_ns"] = r["ts_wall"]
    table = pa.Table.from_pylist(fixed, schema=_INT_TS)
    # a row without a time is a row the reader drops: it must still be written
    ts = table["ts_wall"].cast(pa.timestamp("ns", tz="UTC"))
    return table.set_column(1, _WRITE.field("ts_wall"), ts)


def write_corpus(root: Path, seed: int = 1, files_per_node: int = 3, copies: int = 2, hostile: int = 40,
                 layout: str = "flat") -> list[Path]:
    """Write the corpus under root: `flat` (NODE-TIME-RUN-SEQ.parquet, as the recorder names them) or
    `shipped` (node=NODE/date=DATE/NAME.parquet, as segments are shipped to a bucket). The files written."""
    rng = random.Random(seed)
    written = []
    for node, conns in connections(seed, copies, hostile).items():
        rows = interleave(rng, conns)
        cut = sorted(rng.sample(range(1, len(rows)), files_per_node - 1))
        for seq, (a, b) in enumerate(zip([0, *cut], [*cut, len(rows)], strict=True)):
            name = f"{node}-20261201T{10 + seq:02d}0000-6617c2-{seq:06d}.parquet"
            path = root / name if layout == "flat" else root / f"node={node}" / "date=2026-12-01" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            schema = _WRITE.with_metadata({sf.META_VERSION: sf.FORMAT_VERSION.encode(),
                                              sf.META_NODE: node.encode(), sf.META_RUN: b"6617c2",
                                              sf.META_LIBRARIES: b"{}"})
            table = _table(rows[a:b])
            # small row groups: several batches per file, some joined by the reader, some not
            pq.write_table(table.replace_schema_metadata(schema.metadata), path, compression="zstd",
                           row_group_size=rng.choice([40, 300, 2000]))
            written.append(path)
    return sorted(written)
