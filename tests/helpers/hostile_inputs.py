"""Hostile analyzer input, generated from a seed: AI-shaped HTTP/1.1 and HTTP/2 exchanges whose headers,
framing, encodings and JSON are bent out of shape, cut into recorder-shaped rows with gaps, overlaps,
reordering and nulls. Used by the bounded fuzz test (tests/analyzer/test_fuzz_pipeline.py) and the long
campaign (bench/fuzz_campaign.py): every byte of a segment was written by someone else's program.

`connection_rows(rng)` gives the rows of one connection; `run_analysis(rows)` puts them through the
whole analyzer (tracker, exchanges JSON, events in every content mode, event lines) and returns the
number of output lines, raising whatever the analyzer raised.
"""

from __future__ import annotations

import gzip
import json
import random
import struct
import zlib

import brotli
import hpack
import pyarrow as pa
import zstandard
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    GoAwayFrame,
    HeadersFrame,
    RstStreamFrame,
    SettingsFrame,
)

PATHS = ["/v1/chat/completions", "/v1/responses", "/v1/completions", "/v1/embeddings", "/v1/messages",
         "/v1beta/models/gemini-2.0-flash:generateContent", "/v1beta/models/g:streamGenerateContent?alt=sse",
         "/model/anthropic.claude-3/converse", "/model/m/converse-stream", "/model/m/invoke",
         "/v2/chat", "/api/chat", "/api/generate", "/health", "/", "/v1/models"]
HOSTS = ["api.openai.com", "api.anthropic.com", "generativelanguage.googleapis.com",
         "bedrock-runtime.us-east-1.amazonaws.com", "api.cohere.com", "localhost:11434", "llm.internal:8443",
         "example.com", ""]
CTYPES = ["application/json", "text/event-stream", "application/x-ndjson", "application/jsonl",
          "application/vnd.amazon.eventstream", "text/plain", "application/octet-stream", ""]
ENCODINGS = ["", "gzip", "deflate", "br", "zstd", "gzip, br", "identity", "bogus"]
ODD = [None, True, 0, -1, 2**64, 1.5e308, "", "x" * 50, [], [1, "a", None], {}, {"a": {"b": []}}]


def hostile_json(rng: random.Random, depth: int = 0):
    """An API-shaped JSON value with random type substitutions, sometimes deeply nested."""
    if rng.random() < 0.02:
        n = rng.choice([50, 500, 3000])
        return json.loads("[" * n + "]" * n) if n < 900 else {"deep": "[" * n + "]" * n}
    if depth > 3 or rng.random() < 0.2:
        return rng.choice(ODD)
    shape = {
        "model": rng.choice(["gpt-4o", "claude-3", 5, None, ["x"]]),
        "messages": rng.choice([[{"role": "user", "content": "hi"}], 5, [5],
                                [{"content": [{"type": "text"}]}], [{"role": 1, "content": {"a": 1}}],
                                None, "str"]),
        "stream": rng.choice([True, False, "yes", None]),
        "choices": rng.choice([[{"message": {"content": "ok"}, "finish_reason": "stop"}], [None], 3, [{}]]),
        "usage": rng.choice([{"prompt_tokens": 3, "completion_tokens": 4}, {"input_tokens": "x"}, [], None,
                             {"prompt_tokens": -1, "total_tokens": 2**70}]),
        "content": rng.choice([[{"type": "text", "text": "a"}], "text", [None], 7]),
        "candidates": rng.choice([[{"content": {"parts": [{"text": "a"}]}}], [{"content": 3}], "x"]),
        "contents": rng.choice([[{"parts": [{"text": "q"}]}], [{"parts": None}], 1]),
        "input": rng.choice(["q", ["a", 1], [{"role": "user", "content": [{"type": "input_text"}]}], 3]),
        "output": rng.choice([[{"type": "message", "content": [{"text": "a"}]}], [3], "x"]),
        "delta": rng.choice([{"content": "x"}, {"text": 3}, None]),
        "type": rng.choice(["message_start", "content_block_delta", "message_delta", 3, None]),
        "message": rng.choice([{"usage": {"input_tokens": 1}}, "x", None, {"content": 5}]),
        "tools": rng.choice([[{"type": "function", "function": {"name": "f"}}], [3], "x", None]),
        "system": rng.choice(["sys", [{"text": "s"}], 5, None]),
        "error": rng.choice([{"message": "bad", "type": "x"}, "str", 5, None]),
        "prompt": rng.choice(["p", ["a", "b"], 5, None]),
    }
    keys = rng.sample(sorted(shape), rng.randint(0, len(shape)))
    out = {k: shape[k] for k in keys}
    if rng.random() < 0.3:
        out[rng.choice(keys or ["x"])] = hostile_json(rng, depth + 1)
    return out


def encode(body: bytes, encoding: str, rng: random.Random) -> bytes:
    if encoding == "gzip":
        out = gzip.compress(body)
        if rng.random() < 0.2:  # a second member, or garbage after the first
            out += rng.choice([gzip.compress(body), b"\x00", b"junk"])
        return out
    if encoding == "deflate":
        return zlib.compress(body)
    if encoding == "br":
        return brotli.compress(body)
    if encoding == "zstd":
        return zstandard.ZstdCompressor().compress(body)
    return body


def body_for(rng: random.Random, ctype: str) -> bytes:
    if rng.random() < 0.03:  # a bomb: small on the wire, large decoded
        return b"[]" * rng.choice([10_000, 200_000])
    value = hostile_json(rng)
    text = json.dumps(value)
    if ctype == "text/event-stream":
        lines = [f"data: {json.dumps(hostile_json(rng))}" for _ in range(rng.randint(0, 6))]
        sep = rng.choice(["\n\n", "\r\n\r\n", "\r\r", "\n"])
        if rng.random() < 0.3:
            lines.append("data: [DONE]")
        if rng.random() < 0.1:
            lines.append("data: " + "x" * rng.choice([1000, 70_000]))
        return sep.join(lines).encode()
    if ctype in ("application/x-ndjson", "application/jsonl"):
        return "\n".join(json.dumps(hostile_json(rng)) for _ in range(rng.randint(0, 5))).encode()
    if ctype == "application/vnd.amazon.eventstream":
        return b"".join(eventstream_message(rng) for _ in range(rng.randint(0, 3)))
    return text.encode()


def eventstream_message(rng: random.Random) -> bytes:
    headers = b""
    for name, value in ((":event-type", "chunk"), (":content-type", "application/json"),
                        (":message-type", "event")):
        headers += bytes([len(name)]) + name.encode() + b"\x07" + struct.pack(">H", len(value))
        headers += value.encode()
    if rng.random() < 0.3:  # a header whose length points past the end
        headers += b"\x05bogus\x07\xff\xff"
    payload = json.dumps(hostile_json(rng)).encode()
    total = 12 + len(headers) + len(payload) + 4
    prelude = struct.pack(">II", total, len(headers))
    msg = prelude + struct.pack(">I", zlib.crc32(prelude)) + headers + payload
    return msg + struct.pack(">I", zlib.crc32(msg))


def http1_message(rng: random.Random, start_line: str, headers: list[tuple[str, str]], body: bytes) -> bytes:
    framing = rng.choice(["length", "length", "chunked", "none", "lie_short", "lie_long", "both"])
    hs = list(headers)
    if framing in ("length", "both"):
        hs.append(("Content-Length", str(len(body))))
    elif framing == "lie_short":
        hs.append(("Content-Length", str(max(0, len(body) - rng.randint(1, 50)))))
    elif framing == "lie_long":
        hs.append(("Content-Length", str(len(body) + rng.choice([1, 100, 10**9]))))
    if framing in ("chunked", "both"):
        hs.append(("Transfer-Encoding", "chunked"))
        step = rng.randint(1, 4096)
        body = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + step]), body[i:i + step])
                        for i in range(0, len(body), step)) + b"0\r\n\r\n"
    head = start_line + "\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hs) + "\r\n"
    return head.encode("latin-1", "replace") + body


def exchange_parts(rng: random.Random):
    path, host = rng.choice(PATHS), rng.choice(HOSTS)
    req_ctype, resp_ctype = rng.choice(["application/json", "application/json", ""]), rng.choice(CTYPES)
    req_enc, resp_enc = rng.choice(["", "", "gzip", "zstd", "bogus"]), rng.choice(ENCODINGS)
    req_body = encode(body_for(rng, req_ctype), req_enc, rng)
    resp_body = encode(body_for(rng, resp_ctype), resp_enc, rng)
    req_headers = [("Host", host), ("Authorization", "Bearer sk-proj-FUZZCANARY0123456789abcdef"),
                   ("Content-Type", req_ctype)] + ([("Content-Encoding", req_enc)] if req_enc else [])
    resp_headers = [("Content-Type", resp_ctype)] + ([("Content-Encoding", resp_enc)] if resp_enc else [])
    status = rng.choice([200, 200, 200, 400, 401, 429, 500, 101, 204, 304, 999])
    return path, host, req_headers, req_body, status, resp_headers, resp_body


def http1_streams(rng: random.Random) -> tuple[bytes, bytes]:
    egress, ingress = bytearray(), bytearray()
    for _ in range(rng.randint(1, 3)):
        path, _, req_h, req_b, status, resp_h, resp_b = exchange_parts(rng)
        method = rng.choice(["POST", "POST", "GET", "HEAD", "CONNECT", "PUT"])
        egress += http1_message(rng, f"{method} {path} HTTP/1.1", req_h, req_b)
        if rng.random() < 0.1:
            ingress += b"HTTP/1.1 100 Continue\r\n\r\n"
        ingress += http1_message(rng, f"HTTP/1.1 {status} X", resp_h, resp_b)
    return bytes(egress), bytes(ingress)


def http2_streams(rng: random.Random) -> tuple[bytes, bytes]:
    enc_req, enc_resp = hpack.Encoder(), hpack.Encoder()
    egress = bytearray(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" if rng.random() < 0.9 else b"")
    ingress = bytearray()
    egress += SettingsFrame(0).serialize()
    ingress += SettingsFrame(0).serialize()
    for i in range(rng.randint(1, 4)):
        sid = 1 + 2 * i
        path, host, req_h, req_b, status, resp_h, resp_b = exchange_parts(rng)
        fields = [(":method", "POST"), (":path", path), (":scheme", "https"), (":authority", host)]
        fields += [(k.lower(), v) for k, v in req_h if k != "Host"]
        if rng.random() < 0.3:
            fields.append(("content-length", str(len(req_b) + rng.choice([0, 1, -1]))))
        egress += headers_frames(rng, sid, enc_req.encode(fields), end_stream=not req_b)
        egress += data_frames(rng, sid, req_b)
        resp_fields = [(":status", str(status))] + [(k.lower(), v) for k, v in resp_h]
        ingress += headers_frames(rng, sid, enc_resp.encode(resp_fields), end_stream=not resp_b)
        ingress += data_frames(rng, sid, resp_b)
        if rng.random() < 0.05:
            ingress += RstStreamFrame(sid, error_code=rng.randint(0, 13)).serialize()
    if rng.random() < 0.1:
        ingress += GoAwayFrame(0, last_stream_id=1, error_code=2).serialize()
    if rng.random() < 0.05:  # a header block a peer never finishes, or a table-size bomb
        f = HeadersFrame(99)
        f.data = rng.choice([b"\x3f\xe1\xff\xff\xff\x03", b"\x82" * 100])
        egress += f.serialize() + ContinuationFrame(99, data=b"\x00" * 16000).serialize() * rng.randint(1, 5)
    return bytes(egress), bytes(ingress)


def headers_frames(rng: random.Random, sid: int, block: bytes, end_stream: bool) -> bytes:
    cut = rng.randint(0, len(block)) if rng.random() < 0.2 else len(block)
    first = HeadersFrame(sid, data=block[:cut])
    if end_stream:
        first.flags.add("END_STREAM")
    if cut == len(block):
        first.flags.add("END_HEADERS")
        return first.serialize()
    cont = ContinuationFrame(sid, data=block[cut:])
    cont.flags.add("END_HEADERS")
    return first.serialize() + cont.serialize()


def data_frames(rng: random.Random, sid: int, body: bytes) -> bytes:
    out = bytearray()
    step = rng.choice([16384, 100, 7])
    for i in range(0, len(body), step):
        f = DataFrame(sid, data=body[i:i + step])
        if i + step >= len(body):
            f.flags.add("END_STREAM")
        out += f.serialize()
    return bytes(out)


def mutate(rng: random.Random, data: bytes) -> bytes:
    """Byte-level damage: flips, inserts, deletions, duplications, truncation."""
    b = bytearray(data)
    for _ in range(rng.choice([0, 0, 1, 2, 8])):
        if not b:
            break
        i = rng.randrange(len(b))
        op = rng.randrange(5)
        if op == 0:
            b[i] ^= 1 << rng.randrange(8)
        elif op == 1:
            b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        elif op == 2:
            del b[i:i + rng.randint(1, 64)]
        elif op == 3:
            j = rng.randrange(len(b))
            b[i:i] = b[j:j + rng.randint(1, 256)]
        else:
            del b[i:]
    return bytes(b)


HUGE = (0x40000000, 0x7FFFFFFF, 0xFFFFFFFF, 1 << 40, (1 << 63) - 1)  # lengths and offsets no file has


def damage_file(rng: random.Random, data: bytes) -> bytes:
    """File-level damage of a segment or in-progress stream: a few bits flipped, a 4- or 8-byte field
    (a length, an offset, a count) made huge, or the file cut and padded with garbage."""
    b = bytearray(data)
    how = rng.choice(("flip", "huge", "cut"))
    if how == "flip":
        for _ in range(rng.randint(1, 8)):
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
    elif how == "huge":
        width = rng.choice((4, 8))
        at = rng.randrange(0, len(b) - width)
        b[at:at + width] = (rng.choice(HUGE) & ((1 << 8 * width) - 1)).to_bytes(width, "little")
    else:
        b = b[:rng.randrange(len(b))] + rng.randbytes(rng.randrange(1, 200))
    return bytes(b)


COLUMNS = [("kind", pa.string()), ("ts_wall", pa.int64()), ("node", pa.string()), ("pid", pa.int32()),
           ("tid", pa.int32()), ("uid", pa.int64()), ("comm", pa.string()), ("cgroup_id", pa.uint64()),
           ("conn_id", pa.string()), ("direction", pa.string()), ("stream_offset", pa.uint64()),
           ("length", pa.uint32()), ("data", pa.binary()), ("gap_reason", pa.string()),
           ("lib_path", pa.string())]
SCHEMA = pa.schema(COLUMNS)


def connection_rows(rng: random.Random) -> list[dict]:
    """Rows of one connection (sometimes two on one conn_id's worth of damage) as the recorder writes them."""
    egress, ingress = (http2_streams if rng.random() < 0.4 else http1_streams)(rng)
    if rng.random() < 0.5:
        egress, ingress = mutate(rng, egress), mutate(rng, ingress)
    base = {"node": "n", "pid": 7, "tid": 7, "uid": 0, "comm": "fuzz", "cgroup_id": 1,
            "conn_id": f"7-{rng.randrange(3)}", "lib_path": "/lib/libssl.so.3"}
    rows = []
    ts = 1_700_000_000_000_000_000
    if rng.random() < 0.8:
        rows.append({**base, "kind": "open", "ts_wall": ts})
    for direction, buf in (("egress", egress), ("ingress", ingress)):
        off = 0
        while off < len(buf):
            n = rng.choice([1, 7, 64, 1000, 16384, len(buf)])
            ts += rng.randint(1, 10_000_000)
            if rng.random() < 0.05:  # a gap the recorder reported
                gap = rng.choice([1, 100, 10_000, 2**30])
                rows.append({**base, "kind": "gap", "ts_wall": ts, "direction": direction,
                             "stream_offset": off, "length": min(gap, 2**32 - 1),
                             "gap_reason": "ringbuf_full"})
                off += gap if rng.random() < 0.5 else 0
                continue
            start = off - rng.randint(0, 50) if rng.random() < 0.05 else off  # an overlap
            start = max(0, start)
            chunk = buf[off:off + n]
            rows.append({**base, "kind": "data", "ts_wall": ts, "direction": direction,
                         "stream_offset": start, "length": len(chunk), "data": chunk})
            off += n
    if rng.random() < 0.7:
        rows.append({**base, "kind": "close", "ts_wall": ts + 1})
    if rng.random() < 0.2:
        rng.shuffle(rows)
    if rng.random() < 0.1 and rows:  # a row with a null where the recorder never writes one
        victim = rng.choice(rows)
        victim[rng.choice(["direction", "stream_offset", "length", "data", "conn_id", "kind"])] = None
    if rng.random() < 0.05 and rows:
        rows.append(dict(rng.choice(rows)))  # a duplicated row
    if rng.random() < 0.3:
        rows = plaintext_rows(rng, rows)
    return rows


def plaintext_rows(rng: random.Random, rows: list[dict]) -> list[dict]:
    """The connection as plaintext capture writes it (format 4), with a socket row whose ends may be
    anything (null, the same on both sides, a port out of range), and often the server's end of it too
    (directions swapped, ends mirrored): the analyzer pairs ends by what these rows say."""
    ports = [None, 0, 8000, 41000, 65535, 2**31 - 1]
    ips = [None, "127.0.0.1", "10.0.0.1", "::1", "not-an-ip"]
    local = (rng.choice(ips), rng.choice(ports))
    peer = local if rng.random() < 0.2 else (rng.choice(ips), rng.choice(ports))
    base = {"tls_stack": "plaintext", "lib_path": None}
    plain = [{**r, **base} for r in rows]
    socket = {**(plain[0] if plain else {"node": "n", "pid": 7, "tid": 7, "uid": 0, "comm": "fuzz",
                                         "cgroup_id": 1, "conn_id": "7-0", **base}),
              "kind": "socket", "ts_wall": 1_700_000_000_000_000_000, "fd": 5, "socket_source": "syscall",
              "local_ip": local[0], "local_port": local[1], "peer_ip": peer[0], "peer_port": peer[1]}
    for key in ("direction", "stream_offset", "length", "data"):
        socket.pop(key, None)
    plain.insert(0, socket)
    if rng.random() < 0.6:  # the other end, on the same node
        swap = {"egress": "ingress", "ingress": "egress"}
        server = [{**r, "conn_id": f"{r.get('conn_id')}-srv", "pid": 8,
                   "direction": swap.get(r.get("direction"), r.get("direction"))} for r in plain]
        server[0].update(local_ip=peer[0], local_port=peer[1], peer_ip=local[0], peer_port=local[1])
        plain += server
    return plain


def batch_of(rows: list[dict]) -> pa.RecordBatch:
    return pa.RecordBatch.from_pylist(rows, schema=SCHEMA)


class _Lines:
    """A sink that renders every output line in memory and counts them (the files' writers' own code)."""

    wants_events = True

    def __init__(self) -> None:
        self.lines = 0

    def write_exchange(self, x) -> None:
        from analyzer.sinks.exchanges_jsonl import dumps

        self.lines += bool(dumps(x))

    def write_events(self, x, events: list[dict]) -> None:
        from analyzer.sinks.events_jsonl import event_line

        self.lines += sum(bool(event_line(ev)) for ev in events)

    def write_connection(self, info) -> None:
        pass

    def close(self) -> str:
        return ""


def run_analysis(rows: list[dict], contents: tuple[str, ...] = ("full", "hash", "none"),
                 parse_errors: list[int] | None = None) -> int:
    """Everything the analyzer makes of the rows, through the real pipeline, in each content mode; the
    number of output lines. `parse_errors`, when given, gets the pipeline's count of exceptions its
    boundaries caught (a parser that raised: the run went on, but the parser has a bug)."""
    from analyzer.config import AnalyzerConfig
    from analyzer.pipeline import Pipeline

    lines = 0
    for content in contents:
        sink = _Lines()
        cfg = AnalyzerConfig(content=content, hash_key=b"fuzz-key-0123456789abcdef")
        pipeline = Pipeline(cfg, [sink])
        pipeline.run([batch_of(rows)])
        pipeline.close()
        lines += sink.lines
        if parse_errors is not None:
            parse_errors.append(pipeline.parse_errors)
    return lines
