"""No secret the captured traffic held reaches any output of the real `oisp-analyze`: a segment written
in the recorder's format (contract/segment_format.py) carries canary secrets in headers, query strings,
URL userinfo, request and response bodies, an SSE stream and the process's command line; every output
(--out, --exchanges, --duckdb, OTLP, the summary mode, stderr) in each --content mode is searched for
them. With --content full, the key-shaped canaries put in prompts and answers stay in the OISP content
fields, and only there. The summary never writes a control character to the terminal."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from conftest import BIN
from contract.segment_format import META_NODE, META_VERSION, SCHEMA
from helpers.otlp_receiver import Receiver

# in prompts and answers only: kept with --content full, in those fields alone
CONTENT = ["CONTENTcanary0001", "CONTENTcanary0002"]
# everywhere else: never in any output
SECRETS = ["CANARY-Q-APIKEY1", "CANARYhdrAuth00001", "CANARYportkey0002", "CANARYapim0003",
           "CANARYcookie0004", "CANARYxauth0005", "CANARYbodyGithub000006", "CANARYjwtsig07",
           "CANARY-slack-0008",
           "CANARYawsSecret0009", "CANARY0010XYZW", "CANARYsc0011", "CANARYidjwt12", "CANARYsse0013",
           "CANARYuserinfo14", "CANARYtok15", "CANARYsig16", "CANARYproxy17", "CANARYsess18",
           "CANARYRESP19AB", "CANARYpw20"] + [f"CANARYcmd{i}" for i in range(1, 11)]
CMDLINE = ["curl", "-HAuthorization: Bearer CANARYcmd1xyz", "--header=x-api-key: CANARYcmd2",
           "-u", "user:CANARYcmd3", "https://bob:CANARYcmd4@h.example/x?a=1&key=CANARYcmd5", "--api-key",
           "CANARYcmd6", "OPENAI_API_KEY=CANARYcmd7", "sk-ant-api03-CANARYcmd8abc", "-uadmin:CANARYcmd9",
           "--token=CANARYcmd10"]
CONTENT_FIELDS = (("messages", "content"), ("choices", "message", "content"), ("tool_calls", "arguments"))
CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]")


def _request1() -> bytes:
    body = json.dumps({
        "model": "gpt-4o", "stream": True,
        "messages": [{"role": "user", "content": "my key is sk-proj-CONTENTcanary0001 ok"}],
        "user": "ghp_CANARYbodyGithub000006xyz",
        "metadata": {"jwt": "eyJhbGciOiJIUzI1NiJ9.eyJDQU5BUlkiOjF9.CANARYjwtsig07",
                     "slack": "xoxb-CANARY-slack-0008",
                     "aws": "aws_secret_access_key=CANARYawsSecret0009abcdefghijklmnopqrstuv",
                     "akia": "AKIACANARY0010XYZW"}}).encode()
    return (b"POST /v1/chat/completions?api_key=CANARY-Q-APIKEY1&x=1 HTTP/1.1\r\nHost: api.openai.com\r\n"
            b"Authorization: Bearer sk-proj-CANARYhdrAuth00001\r\nx-portkey-api-key: CANARYportkey0002\r\n"
            b"Ocp-Apim-Subscription-Key: CANARYapim0003\r\nCookie: sid=CANARYcookie0004\r\n"
            b"x-auth-token: CANARYxauth0005\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)) + body


def _response1() -> bytes:
    chunks = [{"id": "chatcmpl-eyJhbGciOiJub25lIn0.eyJDQU5BUlkyIjoxfQ.CANARYidjwt12", "model": "gpt-4o",
               "system_fingerprint": "sk-ant-api03-CANARYsse0013abc",
               "choices": [{"index": 0, "delta": {"role": "assistant",
                                                  "content": "here AIzaCONTENTcanary0002abcdefgh"}}]},
              {"id": "chatcmpl-x", "choices": [{"index": 0, "delta": {"content": " done"},
                                                "finish_reason": "stop"}]}]
    body = b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"
    return (b"HTTP/1.1 200 OK\r\nX-Evil: \x1b]0;pwned\x07\x1b[2J\x9b1m\r\nSet-Cookie: s=CANARYsc0011\r\n"
            b"Content-Type: text/event-stream\r\nContent-Length: %d\r\n\r\n" % len(body)) + body


def _exchange2() -> tuple[bytes, bytes]:
    req = (b"GET http://alice:CANARYuserinfo14@api.openai.com/v1/models?token=CANARYtok15&sig=CANARYsig16 "
           b"HTTP/1.1\r\nHost: api.openai.com\r\nProxy-Authorization: Basic CANARYproxy17\r\n"
           b"x-session-id: CANARYsess18\r\n\r\n")
    body = json.dumps({"data": [], "note": "AKIACANARYRESP19AB", "password": "CANARYpw20"}).encode()
    resp = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
    return req, resp + body


def write_segment(directory: Path) -> Path:
    """One connection of a process with secrets on its command line, in the recorder's format."""
    t0 = 1_800_000_000_000_000_000
    base = {"node": "node-1", "pid": 4242, "tid": 4242, "uid": 1000, "comm": "agent\x1b[31m",
            "cgroup_id": 7, "ts_mono_ns": 1, "lib_path": "/usr/lib/libssl.so.3"}
    conn = {**base, "conn_id": "4242-abc-1"}
    req2, resp2 = _exchange2()
    rows = [{**base, "kind": "process", "ts_wall": t0, "ppid": 1, "exe": "/usr/bin/curl", "cmdline": CMDLINE},
            {**conn, "kind": "open", "ts_wall": t0 + 1},
            {**conn, "kind": "sni", "ts_wall": t0 + 2, "server_name": "api.openai.com"}]
    offsets = {"egress": 0, "ingress": 0}
    for i, (direction, data) in enumerate([("egress", _request1()), ("ingress", _response1()),
                                           ("egress", req2), ("ingress", resp2)]):
        rows.append({**conn, "kind": "data", "ts_wall": t0 + 1000 * (i + 1), "direction": direction,
                     "stream_offset": offsets[direction], "length": len(data), "data": data})
        offsets[direction] += len(data)
    rows.append({**conn, "kind": "close", "ts_wall": t0 + 10_000})
    schema = SCHEMA.with_metadata({META_VERSION: b"2", META_NODE: b"node-1"})
    table = pa.Table.from_pylist(rows, schema=schema)
    path = directory / "node-1-20270115T080000-abc-000000.parquet"
    pq.write_table(table, path)
    return path


@pytest.fixture(scope="module")
def segments(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("segments")
    write_segment(d)
    return d


def found(text: str, canaries: list[str]) -> list[str]:
    return [c for c in canaries if c in text]


def without_content(event: dict) -> dict:
    """The event with its OISP content fields emptied (what --content full keeps as captured)."""
    data = event.get("data", {})
    for path in CONTENT_FIELDS:
        items = data.get(path[0]) or []
        for item in items:
            *parents, leaf = path[1:]
            for p in parents:
                item = item.get(p, {})
            if leaf in item:
                item[leaf] = None
    return event


def events_text(lines: list[str], content: str) -> str:
    events = [json.loads(line) for line in lines if line.strip()]
    if content == "full":
        events = [without_content(e) for e in events]
    return json.dumps(events)


def duckdb_text(path: Path, content: str) -> str:
    con = duckdb.connect(str(path), read_only=True)
    parts = []
    for (table,) in con.execute("SELECT table_name FROM information_schema.tables").fetchall():
        rel = con.execute(f'SELECT * FROM "{table}"')
        cols = [d[0] for d in rel.description]
        for row in rel.fetchall():
            for col, value in zip(cols, row, strict=True):
                if col == "event_json":
                    parts.append(events_text([value], content))
                else:
                    parts.append(str(value))
    con.close()
    return "\n".join(parts)


def run(*args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(BIN / "oisp-analyze"), *map(str, args)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    return proc


@pytest.mark.parametrize("content", ["full", "hash", "none"])
def test_no_canary_in_any_output(segments, tmp_path, content):
    out, xs, db = tmp_path / "events.jsonl", tmp_path / "exchanges.jsonl", tmp_path / "audit.duckdb"
    with Receiver("http") as rx:
        proc = run(segments, "--out", out, "--exchanges", xs, "--duckdb", db, "--content", content,
                   "--otlp", f"http://127.0.0.1:{rx.port}", "--otlp-protocol", "http/protobuf")
        otlp = "\n".join(str(r) for sig in ("traces", "logs") for r in rx.requests[sig])
    lines = out.read_text().splitlines()
    assert len(lines) == 2 and '"ai.request"' in lines[0]
    every = SECRETS + CONTENT
    # full keeps prompts and answers as captured: in the content fields, and nowhere else
    assert found(out.read_text(), CONTENT) == (CONTENT if content == "full" else [])
    assert found(events_text(lines, content), every) == []
    assert found(xs.read_text(), every) == []  # exchange bodies are not content fields
    assert found(duckdb_text(db, content), every) == []
    assert found(proc.stderr, every) == []
    assert "CANARY" not in otlp or content == "full"
    assert found(otlp, SECRETS) == [] and otlp  # answers go out only with full (the OTLP sink's rule)
    exchanges = [json.loads(line) for line in xs.read_text().splitlines()]
    bodies = [x[side]["body"] for x in exchanges for side in ("request", "response")]
    if content == "full":
        assert all("sha256" in b for b in bodies) and any("sse" in b for b in bodies)
    else:  # size, and a keyed hash with "hash": nothing of the body itself
        assert all(set(b) <= {"wire_bytes", "encoding", "decoded_bytes", "error", "hash"} for b in bodies)
        assert all(b["hash"].startswith("hmac-sha256:") for b in bodies if content == "hash")
        assert all("hash" not in b for b in bodies if content == "none")


def test_summary_mode_redacts_and_escapes(segments):
    proc = run(segments)
    assert found(proc.stdout + proc.stderr, SECRETS + CONTENT) == []
    assert CONTROL.findall(proc.stdout) == []  # newlines end lines; nothing else drives the terminal
    assert "\\x1b]0;pwned\\x07" in proc.stdout and "agent\\x1b[31m" in proc.stdout  # shown, escaped
    assert "api_key=[redacted]" in proc.stdout


def test_otlp_endpoint_credentials_never_logged(segments, tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"export": {"otlp": {
        "endpoint": "http://otlpuser:CANARYotlpPass21@127.0.0.1:1", "protocol": "http/protobuf",
        "headers": {"authorization": "Bearer CANARYotlpHeader22"}, "timeout_seconds": 1, "retries": 0,
        "flush_timeout_seconds": 2, "signals": ["traces", "logs"]}}}))
    proc = run(segments, "--out", tmp_path / "events.jsonl", "--config", config)
    assert "OTLP" in proc.stderr and "dropped" in proc.stderr  # the export failed, and said so
    assert found(proc.stderr, ["CANARYotlpPass21", "CANARYotlpHeader22"] + SECRETS) == []
