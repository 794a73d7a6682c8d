"""Analyzer throughput and memory on a generated corpus, against a plain pyarrow scan (the floor).

The corpus is built from the real-recorder fixtures (tests/fixtures/segments: an HTTP/1.1 keep-alive
connection and an HTTP/2 connection with 24 multiplexed SSE streams and 1 MiB bodies) plus a
synthetic HTTP/2 connection streaming 2,000 small SSE events, one TLS write each: copies of the three
with new pids and connection ids, written as segments, until the captured payload reaches the size
asked. Run at 1 GB and 2 GB: throughput should hold, and peak memory should not grow with the input.

usage: python bench/analyzer_throughput.py [GB ...]   (default: 1 2)
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import hpack
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from hyperframe.frame import DataFrame, HeadersFrame, SettingsFrame

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from report import write_section  # noqa: E402

from contract import segment_format as sf  # noqa: E402

BIN = Path(sys.executable).parent
SSE_EVENTS = 2000


def fixture_table(name: str) -> pa.Table:
    files = sorted((REPO / "tests/fixtures/segments" / name).glob("*.parquet"))
    return pa.concat_tables(pq.read_table(f) for f in files).cast(sf.SCHEMA).replace_schema_metadata(None)


def sse_template(like: pa.Table) -> pa.Table:
    """One HTTP/2 connection: a request, then SSE_EVENTS DATA frames of one small event each."""
    enc_c, enc_s = hpack.Encoder(), hpack.Encoder()
    egress = [b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + SettingsFrame(0).serialize()]
    h = HeadersFrame(1)
    h.data = enc_c.encode([(":method", "POST"), (":path", "/v1/chat/completions"), (":scheme", "https"),
                           (":authority", "api.openai.com"), ("content-type", "application/json")])
    h.flags.add("END_HEADERS")
    d = DataFrame(1)
    d.data = json.dumps({"model": "gpt-4o-mini", "stream": True,
                         "messages": [{"role": "user", "content": "Tell me a long story."}]}).encode()
    d.flags.add("END_STREAM")
    egress += [h.serialize(), d.serialize()]
    rh = HeadersFrame(1)
    rh.data = enc_s.encode([(":status", "200"), ("content-type", "text/event-stream")])
    rh.flags.add("END_HEADERS")
    ingress = [SettingsFrame(0).serialize(), rh.serialize()]
    for i in range(SSE_EVENTS):
        f = DataFrame(1)
        f.data = (b'data: {"choices":[{"index":0,"delta":{"content":"word%d "}}]}\n\n' % i)
        if i == SSE_EVENTS - 1:
            f.flags.add("END_STREAM")
        ingress.append(f.serialize())
    ts_col = like.schema.get_field_index("ts_wall")
    int_schema = sf.SCHEMA.set(ts_col, pa.field("ts_wall", pa.int64()))
    base = like.slice(0, 1).set_column(ts_col, "ts_wall", like["ts_wall"].slice(0, 1).cast(pa.int64()))
    base = base.to_pylist()[0]
    rows, t = [], base["ts_wall"]
    rows.append({**base, "kind": "open", "direction": None, "stream_offset": None, "length": None,
                 "call_len": None, "data": None, "func": "SSL_do_handshake"})
    for direction, chunks in (("egress", egress), ("ingress", ingress)):
        off = 0
        for c in chunks:
            t += 1000
            rows.append({**base, "kind": "data", "ts_wall": t, "direction": direction, "stream_offset": off,
                         "length": len(c), "call_len": len(c), "data": c, "func": "SSL_write_ex"})
            off += len(c)
    rows.append({**base, "kind": "close", "direction": None, "stream_offset": None, "length": None,
                 "call_len": None, "data": None, "func": "SSL_free", "ts_wall": t + 1000,
                 "egress_bytes": sum(map(len, egress)), "ingress_bytes": sum(map(len, ingress))})
    for r in rows:
        for k in ("gap_reason",):
            r[k] = None
        if r["kind"] != "close":
            r["egress_bytes"] = r["ingress_bytes"] = None
    return pa.Table.from_pylist(rows, schema=int_schema).cast(sf.SCHEMA)


def generate(directory: Path, target_bytes: int) -> tuple[int, int]:
    h1, h2 = fixture_table("h1"), fixture_table("h2")
    templates = [h1, h2, sse_template(h2)]
    payload_per_round = sum(pc.sum(t.filter(pc.equal(t["kind"], "data"))["length"]).as_py()
                            for t in templates)
    rounds = -(-target_bytes // payload_per_round)
    meta = sf.SCHEMA.with_metadata({sf.META_VERSION: sf.FORMAT_VERSION.encode(), sf.META_NODE: b"bench",
                                    sf.META_RUN: b"bench", sf.META_LIBRARIES: b"{}"})
    rows = 0
    writer = None
    file_no = 0
    for r in range(rounds):
        if writer is None or r % 20 == 0:
            if writer:
                writer.close()
            writer = pq.ParquetWriter(directory / f"bench-{file_no:05d}.parquet", meta,
                                      compression="zstd", compression_level=1)
            file_no += 1
        for i, t in enumerate(templates):
            pid = 100000 + r * 3 + i
            n = t.num_rows
            pid_field, conn_field = sf.SCHEMA.field("pid"), sf.SCHEMA.field("conn_id")
            copy = t.set_column(t.schema.get_field_index("pid"), pid_field, pa.array([pid] * n, pa.int32()))
            conn = pa.array([f"{pid}-bench-{r}"] * n).dictionary_encode().cast(conn_field.type)
            copy = copy.set_column(copy.schema.get_field_index("conn_id"), conn_field, conn)
            writer.write_table(copy.replace_schema_metadata(meta.metadata))
            rows += n
    writer.close()
    return rounds * payload_per_round, rows


def scan(directory: Path) -> float:
    """The floor: read (decompress and decode) every column of every row group of every file."""
    started = time.perf_counter()
    for f in sorted(directory.glob("*.parquet")):
        pf = pq.ParquetFile(f)
        for i in range(pf.num_row_groups):
            pf.read_row_group(i)
    return time.perf_counter() - started


def analyze(directory: Path) -> tuple[float, int, str]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    out = subprocess.run([str(BIN / "oisp-analyze"), str(directory), "--exchanges", "/dev/null"],
                         capture_output=True, text=True, check=True)
    elapsed = time.perf_counter() - started
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    assert peak_kb >= before
    return elapsed, peak_kb, out.stderr.strip().splitlines()[-1]


def main() -> None:
    sizes = [float(a) for a in sys.argv[1:]] or [1.0, 2.0]
    results = []
    for gb in sizes:
        with tempfile.TemporaryDirectory(prefix="oisp-analyzer-bench-") as tmp:
            d = Path(tmp)
            payload, rows = generate(d, int(gb * 1e9))
            disk = sum(f.stat().st_size for f in d.glob("*.parquet"))
            floor = scan(d)
            elapsed, peak_kb, summary = analyze(d)
            exchanges = int(summary.split(" exchange(s)")[0].rsplit(" ", 1)[1])
            results.append(dict(gb=gb, payload=payload, rows=rows, disk=disk, floor=floor, elapsed=elapsed,
                                peak_mb=peak_kb / 1024, exchanges=exchanges))
            print(json.dumps(results[-1]), file=sys.stderr)
    table = "\n".join(
        f"| {r['payload'] / 1e9:.2f} GB | {r['rows']:,} | {r['disk'] / 1e6:.0f} MB | {r['floor']:.1f} s "
        f"({r['payload'] / 1e6 / r['floor']:,.0f} MB/s) | {r['elapsed']:.1f} s "
        f"({r['payload'] / 1e6 / r['elapsed']:.0f} MB/s, {r['exchanges'] / r['elapsed']:,.0f} exchanges/s) "
        f"| {r['elapsed'] / r['floor']:.0f}x | {r['peak_mb']:.0f} MB |"
        for r in results
    )
    body = f"""## Analyzer throughput and memory (`bench/analyzer_throughput.py`)

A generated corpus: copies of the two real-recorder fixtures (HTTP/1.1 keep-alive with gzip, chunked,
SSE and a 1 MiB body; HTTP/2 with 24 multiplexed SSE streams and 1 MiB bodies) and of a synthetic
HTTP/2 connection streaming {SSE_EVENTS:,} small SSE events, one TLS write (one row) each, with new
pids and connection ids. "pyarrow scan" reads every column of every row group (the floor); "oisp-analyze" is
`oisp-analyze DIR --exchanges /dev/null` (reassembly, HTTP/1.1 and HTTP/2 parsing, body decoding, SSE
splitting, JSON). Peak memory is the analyzer process's maximum resident set.

| captured payload | rows | segments on disk | pyarrow scan | oisp-analyze | ratio | peak memory |
| --- | --- | --- | --- | --- | --- | --- |
{table}"""
    write_section("analyzer", body)


if __name__ == "__main__":
    main()
