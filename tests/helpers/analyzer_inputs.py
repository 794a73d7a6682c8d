"""Build analyzer input from byte streams: rows as the recorder writes them, cut where a test says."""

from __future__ import annotations

import bisect
from pathlib import Path

import pyarrow as pa

from analyzer.segments.reader import ReadReport, read_batches
from analyzer.sinks.exchanges_jsonl import exchange_to_dict
from analyzer.streams.tracker import ConnectionTracker

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def fixture_streams(name: str) -> dict:
    """The two directions of the fixture's one connection: bytes and (offset, ts) of every chunk."""
    files = sorted((FIXTURES / "segments" / name).glob("*.parquet"))
    out = {"egress": [bytearray(), []], "ingress": [bytearray(), []], "meta": None}
    for batch in read_batches(files, ReadReport()):
        for r in batch.to_pylist():
            out["meta"] = out["meta"] or r
            if r["kind"] == "data":
                buf, marks = out[r["direction"]]
                assert r["stream_offset"] == len(buf)
                marks.append((r["stream_offset"], r["ts_wall"]))
                buf += r["data"]
    return out


def rows_for(streams: dict, cuts: dict[str, list[int]] | None = None, seen_from_start: bool = True,
             drop_prefix: dict[str, int] | None = None) -> list[dict]:
    """Recorder-shaped rows for the streams, cut at the given offsets (default: as recorded).
    drop_prefix drops that many bytes of a direction, as if the capture had begun there."""
    meta = streams["meta"]
    base = {k: meta[k] for k in ("node", "pid", "tid", "uid", "comm", "cgroup_id", "conn_id", "lib_path")}
    rows = []
    if seen_from_start:
        rows.append({**base, "kind": "open", "ts_wall": streams["egress"][1][0][1] - 1, "direction": None,
                     "stream_offset": None, "length": None, "data": None, "gap_reason": None})
    for direction in ("egress", "ingress"):
        buf, marks = streams[direction]
        skip = (drop_prefix or {}).get(direction, 0)
        points = sorted(set((cuts or {}).get(direction) or [m[0] for m in marks]) | {0, len(buf)})
        offsets = [m[0] for m in marks]
        for start, end in zip(points, points[1:], strict=False):
            if end <= skip:
                continue
            start = max(start, skip)
            ts = marks[bisect.bisect_right(offsets, start) - 1][1]
            rows.append({**base, "kind": "data", "ts_wall": ts, "direction": direction,
                         "stream_offset": start - skip, "length": end - start,
                         "data": bytes(buf[start:end]), "gap_reason": None})
    rows.sort(key=lambda r: r["ts_wall"])
    return rows


def analyze_rows(rows: list[dict]) -> list[dict]:
    schema = pa.schema([("kind", pa.string()), ("ts_wall", pa.int64()), ("node", pa.string()),
                        ("pid", pa.int32()), ("tid", pa.int32()), ("uid", pa.int64()), ("comm", pa.string()),
                        ("cgroup_id", pa.uint64()), ("conn_id", pa.string()), ("direction", pa.string()),
                        ("stream_offset", pa.uint64()), ("length", pa.uint32()), ("data", pa.binary()),
                        ("gap_reason", pa.string()), ("lib_path", pa.string())])
    batch = pa.RecordBatch.from_pylist(rows, schema=schema)
    exchanges = list(ConnectionTracker().process([batch]))
    return [exchange_to_dict(x) for x in sorted(exchanges, key=lambda x: x.sequence)]


def rows_from_time(streams: dict, ts: int) -> list[dict]:
    """Rows as a recorder started at `ts` would have written them: chunks of both directions from
    that time on, offsets counted from the first of them, no `open` row."""
    drop = {}
    for direction in ("egress", "ingress"):
        marks = streams[direction][1]
        later = [off for off, t in marks if t >= ts]
        drop[direction] = later[0] if later else len(streams[direction][0])
    return rows_for(streams, seen_from_start=False, drop_prefix=drop)
