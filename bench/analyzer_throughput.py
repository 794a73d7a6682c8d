"""Analyzer throughput and memory on four generated corpora, against a plain pyarrow scan (the floor).

Corpora (CORPORA): large bodies (copies of the real-recorder fixtures in tests/fixtures/segments: an
HTTP/1.1 keep-alive connection and an HTTP/2 connection with 24 multiplexed SSE streams and 1 MiB
bodies), small SSE events (a synthetic HTTP/2 connection streaming 2,000 small SSE events, one TLS
write each), short connections (one small chat completion each), real-size prompts (a 28 KB chat
request and its answer per connection: prose and code, what real prompts cost to redact). Copies get new
pids and connection ids, written as segments until the captured payload reaches the size asked; each
corpus runs at a size and twice it: throughput should hold, and peak memory should not grow with the input.

usage: python bench/analyzer_throughput.py [--before CHECKOUT] [--scale X]
  --before: also run the analyzer of another checkout (e.g. a worktree of an earlier commit) and compare
  --scale: multiply the corpus sizes (SIZES)
"""

from __future__ import annotations

import json
import os
import random
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
FILE_PAYLOAD = 50_000_000
BLOCK_ROWS = 20_000


def fixture_table(name: str) -> pa.Table:
    files = sorted((REPO / "tests/fixtures/segments" / name).glob("*.parquet"))
    table = pa.concat_tables(pq.read_table(f) for f in files)
    for field in sf.SCHEMA:  # columns of later format versions than the fixture's: null
        if field.name not in table.column_names:
            table = table.append_column(field, pa.nulls(table.num_rows, field.type))
    return table.select(sf.SCHEMA.names).cast(sf.SCHEMA).replace_schema_metadata(None)


def _connection(like: pa.Table, egress: list[bytes], ingress: list[bytes]) -> pa.Table:
    """One connection in segment rows: open, the egress chunks, then the ingress chunks (one row
    each), close; identity columns as in `like`'s first row."""
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
        r["gap_reason"] = None
        if r["kind"] != "close":
            r["egress_bytes"] = r["ingress_bytes"] = None
    return pa.Table.from_pylist(rows, schema=int_schema).cast(sf.SCHEMA)


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
    return _connection(like, egress, ingress)


def short_template(like: pa.Table) -> pa.Table:
    """One short HTTP/1.1 connection: one small chat completion and its answer, a write each."""
    body = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hi."}]}).encode()
    request = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: api.openai.com\r\ncontent-type: application/json"
               b"\r\nauthorization: Bearer sk-bench\r\ncontent-length: %d\r\n\r\n" % len(body)) + body
    answer = json.dumps({"id": "chatcmpl-bench", "object": "chat.completion",
                         "model": "gpt-4o-mini-2024-07-18",
                         "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi!"},
                                      "finish_reason": "stop"}],
                         "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}}).encode()
    response = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
                % len(answer)) + answer
    return _connection(like, [request], [response])


def _prose(rng: random.Random, chars: int) -> str:
    """Sentences of common words, some punctuation beyond ASCII (as real text has), about `chars` long."""
    out: list[str] = []
    while sum(map(len, out)) < chars:
        words = " ".join(rng.choice(PROSE_WORDS) for _ in range(rng.randint(6, 18)))
        end = rng.choice([".", ",", ";", ":", "?", " \u2014", ".\n", " \u201cok\u201d."])
        out.append(words.capitalize() + end)
    return " ".join(out)


PROSE_WORDS = ("the of and to in is that for it as was with be by on not this are or from at which but have "
               "an they you were all there would their we been has when who will more no if out so what up "
               "about into than them can only other new some could time these two may then do first any my "
               "now such like our over function return value const import class def self print error result "
               "data list map key token session user assistant system model messages content role request "
               "response").split()
CODE = ("def handler(event):\n    url = f'https://api.example.com/v1/items?page={page}&limit=50'\n"
        "    items = [item for item in fetch(url) if item['status'] == 'active']\n"
        "    return {'status': 200}\n")


def prompt_template(like: pa.Table) -> pa.Table:
    """One HTTP/1.1 connection with a chat request of real size (about 28 KB: a system prompt and six turns
    of prose and code) and a 2 KB answer, captured 16 KiB a write: what real prompts cost to redact."""
    rng = random.Random(1)
    messages = [{"role": "system", "content": _prose(rng, 2000)}]
    for _ in range(6):
        code = "\n```python\n" + CODE * 3 + "```\n"
        messages.append({"role": "user", "content": _prose(rng, 2500) + code})
        messages.append({"role": "assistant", "content": _prose(rng, 1200)})
    body = json.dumps({"model": "gpt-4o", "messages": messages, "max_tokens": 1024,
                       "temperature": 0.2}).encode()
    request = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: api.openai.com\r\ncontent-type: application/json"
               b"\r\nauthorization: Bearer sk-bench\r\ncontent-length: %d\r\n\r\n" % len(body)) + body
    message = {"role": "assistant", "content": _prose(rng, 2000)}
    answer = json.dumps({"id": "chatcmpl-bench", "object": "chat.completion", "model": "gpt-4o-2024-08-06",
                         "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                         "usage": {"prompt_tokens": 6500, "completion_tokens": 450,
                                   "total_tokens": 6950}}).encode()
    response = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
                % len(answer)) + answer
    return _connection(like, [request[i:i + 16384] for i in range(0, len(request), 16384)], [response])


# The corpora: each a list of connection templates copied round after round.
CORPORA = {
    "large bodies": lambda h1, h2: [h1, h2],
    "small SSE events": lambda h1, h2: [sse_template(h2)],
    "short connections": lambda h1, h2: [short_template(h1)],
    "real-size prompts": lambda h1, h2: [prompt_template(h1)],
    "mixed": lambda h1, h2: [h1, h2, sse_template(h2)],
}


def generate(directory: Path, target_bytes: int, corpus: str = "mixed") -> tuple[int, int]:
    h1, h2 = fixture_table("h1"), fixture_table("h2")
    templates = CORPORA[corpus](h1, h2)
    payload_per_round = sum(pc.sum(t.filter(pc.equal(t["kind"], "data"))["length"]).as_py()
                            for t in templates)
    rounds = -(-target_bytes // payload_per_round)
    # labelled version 4: version 5's workload columns are null in it, and a baseline checkout from
    # before version 5 reads it too
    meta = sf.SCHEMA.with_metadata({sf.META_VERSION: b"4", sf.META_NODE: b"bench",
                                    sf.META_RUN: b"bench", sf.META_LIBRARIES: b"{}"})
    # a file per FILE_PAYLOAD bytes of payload (as the recorder rotates by size), written BLOCK_ROWS rows at a
    # time; each copy of a template gets its own pid and connection id
    per_file = max(1, FILE_PAYLOAD // payload_per_round)
    block = max(1, min(per_file, BLOCK_ROWS // sum(t.num_rows for t in templates)))
    pid_field, conn_field = sf.SCHEMA.field("pid"), sf.SCHEMA.field("conn_id")
    rows = 0
    for file_no, first in enumerate(range(0, rounds, per_file)):
        last = min(first + per_file, rounds)
        with pq.ParquetWriter(directory / f"bench-{file_no:05d}.parquet", meta, compression="zstd",
                              compression_level=1) as writer:
            for r0 in range(first, last, block):
                r1 = min(r0 + block, last)
                copies = pa.concat_tables([t for _ in range(r0, r1) for t in templates])
                pids, conns = [], []
                for r in range(r0, r1):
                    for i, t in enumerate(templates):
                        pid = 100000 + r * len(templates) + i
                        pids += [pid] * t.num_rows
                        conns += [f"{pid}-bench-{r}"] * t.num_rows
                copies = copies.set_column(copies.schema.get_field_index("pid"), pid_field,
                                           pa.array(pids, pa.int32()))
                conn = pa.array(conns).dictionary_encode().cast(conn_field.type)
                copies = copies.set_column(copies.schema.get_field_index("conn_id"), conn_field, conn)
                writer.write_table(copies.replace_schema_metadata(meta.metadata))
                rows += copies.num_rows
    return rounds * payload_per_round, rows


def scan(directory: Path, repeats: int = 3) -> float:
    """The floor: read (decompress and decode) every column of every row group of every file, on one
    thread (the analyzer reads on one); the best of `repeats` (a single scan of a fraction of a second
    varied 2.5x from run to run)."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        for f in sorted(directory.glob("*.parquet")):
            pf = pq.ParquetFile(f)
            for i in range(pf.num_row_groups):
                pf.read_row_group(i, use_threads=False)
        times.append(time.perf_counter() - started)
    return min(times)


# one hash key for every run: keyed hashes (API keys' key_hash) are then comparable across checkouts
KEY_CONFIG = Path(tempfile.gettempdir()) / f"oisp-bench-key-{os.getpid()}.yaml"


def key_config() -> Path:
    key = KEY_CONFIG.with_suffix(".key")
    key.write_text("0123456789abcdef" * 4 + "\n")
    KEY_CONFIG.write_text(f"analyzer:\n  hash_key_file: {json.dumps(str(key))}\n")
    return KEY_CONFIG


# Linux's ru_maxrss of a process counts the memory of the one it was forked from (exec keeps the larger
# of the two), and this bench holds its corpus: the analyzer is started from a small Python process that
# forks it, waits for it, and writes its peak to a file.
PEAK_RUNNER = """import os, sys
pid = os.fork()
if pid == 0:
    os.execv(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as f:
    f.write(str(usage.ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(status))
"""


def analyze(directory: Path, out: Path, checkout: Path | None = None) -> tuple[float, int, str]:
    """`oisp-analyze DIR --out EVENTS --exchanges EXCHANGES` (of `checkout`'s code if given): its wall
    time, peak RSS (KB) and summary line."""
    if checkout is None:  # one process: the figures are per core (--workers defaults to the cores)
        cmd = [str(BIN / "oisp-analyze"), "--workers", "1"]
    else:  # the same interpreter and packages, that checkout's analyzer
        cmd = [sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv.pop(1)); "
               "sys.argv[0] = 'oisp-analyze'; from analyzer.cli import main; main()", str(checkout)]
    cmd += [str(directory), "--out", str(out / "events.jsonl"), "--exchanges", str(out / "exchanges.jsonl"),
            "--config", str(key_config())]
    peak = out / "peak_rss_kb"
    started = time.perf_counter()
    res = subprocess.run([sys.executable, "-c", PEAK_RUNNER, str(peak), *cmd], stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True)
    elapsed = time.perf_counter() - started
    if res.returncode != 0:
        raise RuntimeError(f"{cmd} failed: {res.stderr[-2000:]}")
    return elapsed, int(peak.read_text()), res.stderr.strip().splitlines()[-1]


# event fields whose values changed on purpose since the usual baseline (809a604, before the per-core
# work): prices (cache and reasoning rates, the price table's version) and time to first token (the first
# content chunk's capture time, not the response's first byte)
CHANGED_ON_PURPOSE = ("usage", "time_to_first_token_ms")


def comparable_events(out: Path) -> list[str]:
    """The events file's lines, less the fields CHANGED_ON_PURPOSE (all other bytes must be equal)."""
    lines = []
    for line in (out / "events.jsonl").read_text().splitlines():
        ev = json.loads(line)
        for name in CHANGED_ON_PURPOSE:
            ev.get("data", {}).pop(name, None)
        lines.append(json.dumps(ev, sort_keys=True))
    return lines


# runs of each analyzer on each corpus: its time is the best of them, its peak memory the largest
RUNS = 2
# captured payload per corpus, in GB: each run at that size and at twice it (memory must stay flat)
SIZES = {"large bodies": 0.4, "small SSE events": 0.05, "short connections": 0.025, "real-size prompts": 0.05}


def main() -> None:
    args = sys.argv[1:]
    before = Path(args[args.index("--before") + 1]) if "--before" in args else None
    scale = float(args[args.index("--scale") + 1]) if "--scale" in args else 1.0
    results = []
    for corpus, gb in SIZES.items():
        for size in (gb * scale, 2 * gb * scale):
            with tempfile.TemporaryDirectory(prefix="oisp-analyzer-bench-") as tmp:
                d = Path(tmp) / "segments"
                d.mkdir()
                payload, rows = generate(d, int(size * 1e9), corpus)
                disk = sum(f.stat().st_size for f in d.glob("*.parquet"))
                r = dict(corpus=corpus, payload=payload, rows=rows, disk=disk, floor=scan(d))
                for label, checkout in (("after", None), ("before", before)):
                    if label == "before" and checkout is None:
                        continue
                    out = Path(tmp) / label
                    out.mkdir()
                    # best of RUNS (the largest peak): the first touch of fresh memory on this VM (fresh page
                    # cache for the outputs among it) made one run vary by 20-50%
                    runs = [analyze(d, out, checkout) for _ in range(RUNS)]
                    elapsed, summary = min(run[0] for run in runs), runs[0][2]
                    peak_kb = max(run[1] for run in runs)
                    r[label] = dict(elapsed=elapsed, peak_mb=peak_kb / 1024,
                                    exchanges=int(summary.split(" exchange(s)")[0].rsplit(" ", 1)[1]))
                if before is not None:  # the same bytes out
                    after = (Path(tmp) / "after" / "exchanges.jsonl").read_bytes()
                    assert after == (Path(tmp) / "before" / "exchanges.jsonl").read_bytes(), corpus
                    same = comparable_events(Path(tmp) / "after") == comparable_events(Path(tmp) / "before")
                    assert same, corpus
                results.append(r)
                print(json.dumps(r), file=sys.stderr)

    def cell(r: dict, label: str) -> str:
        m = r[label]
        return (f"{m['elapsed']:.1f} s ({r['payload'] / 1e6 / m['elapsed']:.0f} MB/s, "
                f"{m['exchanges'] / m['elapsed']:,.0f} exchanges/s, {m['peak_mb']:.0f} MB)")

    head = "| corpus | captured payload | rows | pyarrow scan, one thread | oisp-analyze | ratio to scan |"
    rule = "| --- | --- | --- | --- | --- | --- |"
    if before is not None:
        head += " before | speedup |"
        rule += " --- | --- |"
    lines = [head, rule]
    for r in results:
        line = (f"| {r['corpus']} | {r['payload'] / 1e9:.3f} GB | {r['rows']:,} | {r['floor']:.2f} s "
                f"({r['payload'] / 1e6 / r['floor']:,.0f} MB/s) | {cell(r, 'after')} | "
                f"{r['after']['elapsed'] / r['floor']:.0f}x |")
        if before is not None:
            line += f" {cell(r, 'before')} | {r['before']['elapsed'] / r['after']['elapsed']:.2f}x |"
        lines.append(line)
    body = f"""## Analyzer throughput and memory (`bench/analyzer_throughput.py`)

Four generated corpora, each at a size and twice it: **large bodies** (copies of the two real-recorder
fixtures: HTTP/1.1 keep-alive with gzip, chunked, SSE and a 1 MiB body; HTTP/2 with 24 multiplexed SSE
streams and 1 MiB bodies), **small SSE events** (an HTTP/2 connection streaming {SSE_EVENTS:,} small chat
completion chunks, one TLS write, one row, each), **short connections** (one small chat completion per
connection, a write each way), **real-size prompts** (one chat completion per connection whose request
is about 28 KB, a system prompt and six turns of prose and code, captured 16 KiB a write; a 2 KB answer).
Copies get new pids and connection ids; files rotate every
{FILE_PAYLOAD // 1_000_000} MB of payload (the copies compress well: the files on disk are small).
"pyarrow scan" reads every column of every row group on one thread, best of 3 (the floor);
"oisp-analyze" is `oisp-analyze DIR --workers 1 --out EVENTS --exchanges EXCHANGES`, one process
(reassembly, HTTP/1.1 and HTTP/2 parsing, body decoding, SSE splitting, JSON, events, redaction), best of
{RUNS} runs, with the largest peak resident memory of them (its own: it is started from a small process,
see PEAK_RUNNER). This VM backs its memory lazily: the first touch of a page is slow (a 300 MB file written
at 118 MB/s fresh, 6 GB/s written again), so a single run varied by 20-50% with the pages it was given.
"before" (with `--before CHECKOUT`) is the same command run from another checkout's code, whose exchanges must
be byte-identical, and its events too but for the fields changed on purpose since (`data.usage`: cache
and reasoning prices; `data.time_to_first_token_ms`: from the first content chunk).

{chr(10).join(lines)}"""
    write_section("analyzer", body)


if __name__ == "__main__":
    main()
