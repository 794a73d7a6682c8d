"""Go's crypto/tls under the real recorder: Go programs built in the test run (testbed/go/, Debian's
golang-go) calling the fake OpenAI under its real name, over HTTP/2 and HTTP/1.1, 50 goroutines on one
connection, a 1 MiB body, stripped; a Go TLS server; Go programs the recorder must leave alone; and a
Go program that must keep running right while recorders attach, detach and are killed."""

from __future__ import annotations

import base64
import fcntl
import hashlib
import io
import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from analyzer.ai.schema import validation_errors
from conftest import BIN, read_segments, start_recorder
from contract import segment_format as sf
from helpers.ai_calls import pairs
from helpers.go_programs import build, with_go_version
from testbed import e2e_run, fake_providers
from testbed.hypercorn_server import HypercornServer
from testbed.pki import make_pki

pytestmark = pytest.mark.ebpf
F_GETPIPE_SZ = getattr(fcntl, "F_GETPIPE_SZ", 1032)


@pytest.fixture(scope="module")
def go_programs(tmp_path_factory) -> dict[str, Path]:
    return build(tmp_path_factory.mktemp("go-programs"))


def analyze(segments: Path, out_dir: Path) -> tuple[list[dict], list[dict]]:
    """(events, exchanges) of oisp-analyze over the segments."""
    events, exchanges = out_dir / "events.jsonl", out_dir / "exchanges.jsonl"
    res = subprocess.run([str(BIN / "oisp-analyze"), str(segments), "--out", str(events), "--content", "full",
                          "--exchanges", str(exchanges)], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return ([json.loads(line) for line in events.read_text().splitlines()],
            [json.loads(line) for line in exchanges.read_text().splitlines()])


@pytest.fixture(scope="module")
def go_e2e(go_programs, tmp_path_factory):
    """testbed/go_workload.py under the recorder, analyzed."""
    work = tmp_path_factory.mktemp("go-e2e")
    (work / "go-programs.json").write_text(json.dumps({k: str(v) for k, v in go_programs.items()}))
    run = e2e_run.run(work, module="testbed.go_workload")
    events, exchanges = analyze(run.segments, work)
    return run, events, exchanges


def test_every_go_call_is_one_exact_pair(go_e2e):
    run, events, _ = go_e2e
    calls = run.truth["calls"]
    # 2 plain HTTP/2, 2 stripped, 2 HTTP/1.1, 1 + 50 concurrent, 1 with a 1 MiB body
    assert len(calls) == 58
    assert all(validation_errors(e) == [] for e in events)
    found = pairs(events)
    assert set(found) == {c["marker"] for c in calls}
    for c in calls:
        req, resp = found[c["marker"]]
        assert resp is not None, c["marker"]
        assert req["data"]["model"]["id"] in ("gpt-4o-mini", "gpt-4o-long")
        assert resp["data"]["model"]["id"] == c["model"], c["marker"]
        assert resp["data"]["status_code"] == c["status"] == 200
        assert bool(req["data"].get("streaming")) is c["streaming"], c["marker"]
        assert resp["data"]["choices"][0]["message"]["content"] == c["answer"], c["marker"]
        usage = resp["data"]["usage"]
        assert (usage["prompt_tokens"], usage["completion_tokens"]) == (c["prompt_tokens"],
                                                                         c["completion_tokens"])
        assert req["data"]["provider"]["name"] == "openai"
        assert req["data"]["provider"]["endpoint"] == "https://api.openai.com/v1/chat/completions"
        assert req["process"]["pid"] == resp["process"]["pid"] == c["pid"]
        assert req["attrs"]["http_version"] == {"HTTP/2.0": "2", "HTTP/1.1": "1.1"}[c["proto"]], c["marker"]
        assert req["attrs"]["tls_stack"] == "go"
        assert req["attrs"]["tls_library"].endswith("/" + c["client"])
        assert req["attrs"]["socket_source"] == "go_conn"
        assert req["attrs"]["peer_address"] == "127.0.0.1:443"
        # the server name the Go client sent (crypto/tls.hostnameInSNI's result); nothing unknown
        assert req["attrs"]["server_name"] == "api.openai.com"
        assert "identity_unknown" not in req["attrs"]
        assert req["confidence"]["completeness"] == "full"
    assert {c["proto"] for c in calls} == {"HTTP/2.0", "HTTP/1.1"}
    assert "sk-go-test-key-0123456789" not in json.dumps(events)


def test_fifty_goroutines_share_one_http2_connection(go_e2e):
    run, events, _ = go_e2e
    concurrent = [c for c in run.truth["calls"] if c["marker"].startswith("[go-c")]
    assert len(concurrent) == 51 and len({c["pid"] for c in concurrent}) == 1
    found = pairs(events)
    requests = [found[c["marker"]][0] for c in concurrent]
    assert len({r["attrs"]["connection_id"] for r in requests}) == 1
    assert len({r["attrs"]["stream_id"] for r in requests}) == 51
    # the long streamed answers, each assembled from its own frames while the others interleaved
    assert {found[c["marker"]][1]["data"]["choices"][0]["message"]["content"]
            for c in concurrent if c["streaming"]} == {fake_providers.LONG_ANSWER}


def test_one_mebibyte_request_body_is_whole(go_e2e):
    run, _, exchanges = go_e2e
    (big,) = [c for c in run.truth["calls"] if c["marker"] == "[go-big-big]"]
    (received,) = [base64.b64decode(s["request_body"]) for s in run.server_log
                   if b"[go-big-big]" in base64.b64decode(s["request_body"])[:200]]
    assert len(received) == big["request_bytes"] > 1 << 20
    (x,) = [x for x in exchanges if x["pid"] == big["pid"] and x["path"] == "/v1/chat/completions"]
    assert x["complete"] and x["request"]["complete"]
    assert x["request"]["body"]["wire_bytes"] == x["request"]["body"]["decoded_bytes"] == len(received)
    assert x["request"]["body"]["sha256"] == hashlib.sha256(received).hexdigest()


def test_stripped_program_and_segment_rows(go_e2e):
    run, _, _ = go_e2e
    log = run.recorder_log
    assert re.search(r"probed Go program \S+/aiclient-stripped \(.*go1\.\d+.*, stripped,", log), log[-3000:]
    assert re.search(r"probed Go program \S+/aiclient \(.*, with symbols,", log)
    table = read_segments(run.segments)
    rows = [r for r in table.drop_columns(["ts_wall", "process_start"]).to_pylist() if r["kind"] != "process"]
    assert {r["tls_stack"] for r in rows} == {"go"}
    data_funcs = {r["func"] for r in rows if r["kind"] == "data"}
    assert data_funcs == {"crypto/tls.(*Conn).Write", "crypto/tls.(*Conn).Read"}
    conns = {r["conn_id"] for r in rows}
    opened = {r["conn_id"] for r in rows if r["kind"] == "open"}
    sockets = {r["conn_id"]: r for r in rows if r["kind"] == "socket"}
    # every connection seen from its handshake, with its socket read from the *tls.Conn
    assert opened == conns and set(sockets) == conns
    assert {(s["socket_source"], s["peer_ip"], s["peer_port"]) for s in sockets.values()} == {
        ("go_conn", "127.0.0.1", 443)}
    assert all(r["gap_reason"] is None for r in rows)
    meta = pq.read_metadata(next(run.segments.glob("*.parquet"))).metadata
    assert meta[b"oisp.segment.version"] == sf.FORMAT_VERSION.encode()


def _python_client(url: str, ca_file: Path) -> subprocess.Popen:
    code = (
        "import json, ssl, sys, urllib.request\n"
        "ctx = ssl.create_default_context(cafile=sys.argv[2])\n"
        "print('ready', flush=True); sys.stdin.readline()\n"
        "body = json.dumps({'model': 'gpt-4o', 'messages': [{'role': 'user', 'content': 'hi Go server'}]})\n"
        "req = urllib.request.Request(sys.argv[1], body.encode(), {'Content-Type': 'application/json'})\n"
        "print(urllib.request.urlopen(req, context=ctx).read().decode())\n"
    )
    return subprocess.Popen([sys.executable, "-c", code, url, str(ca_file)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)


def test_go_tls_server_and_python_client_both_seen(go_programs, tmp_path):
    pki = make_pki(tmp_path / "pki", "localhost")
    pki.cert.private_key_pem.write_to_path(str(tmp_path / "server.key"))
    pki.cert.cert_chain_pems[0].write_to_path(str(tmp_path / "server.pem"))
    server = subprocess.Popen([str(go_programs["tlsserver"]), "-cert", str(tmp_path / "server.pem"),
                               "-key", str(tmp_path / "server.key")], stdout=subprocess.PIPE, text=True)
    client = None
    rec = None
    try:
        port = json.loads(server.stdout.readline())["port"]
        client = _python_client(f"https://localhost:{port}/v1/chat/completions", pki.ca_file)
        assert client.stdout.readline().strip() == "ready"
        (tmp_path / "rec").mkdir()
        rec = start_recorder(tmp_path / "rec", args=["--pid", str(server.pid), "--pid", str(client.pid)])
        out, _ = client.communicate("go\n", timeout=60)
        assert client.returncode == 0 and json.loads(out)["choices"][0]["message"]["content"] == \
            "Hello from the Go server."
        assert rec.stop() == 0, rec.log
    finally:
        server.kill()
        server.wait()
        if client is not None and client.poll() is None:
            client.kill()
        if rec is not None and rec.proc.poll() is None:
            rec.proc.kill()
    events, exchanges = analyze(rec.segments_dir, tmp_path)
    # both ends of the one call, each from its own TLS stack, each with its role
    ends = {x["pid"]: x for x in exchanges}
    assert set(ends) == {server.pid, client.pid}
    assert (ends[server.pid]["role"], ends[client.pid]["role"]) == ("server", "client")
    for x in ends.values():
        assert (x["method"], x["path"], x["status"], x["complete"]) == ("POST", "/v1/chat/completions", 200,
                                                                         True)
        assert x["authority"] == f"localhost:{port}"
    for part in ("request", "response"):
        assert ends[server.pid][part]["body"]["sha256"] == ends[client.pid][part]["body"]["sha256"]
    rows = read_segments(rec.segments_dir).drop_columns(["ts_wall", "process_start"]).to_pylist()
    assert {(r["pid"], r["tls_stack"]) for r in rows if r["kind"] == "data"} == {
        (server.pid, "go"), (client.pid, "openssl")}
    assert {r["func"] for r in rows if r["pid"] == server.pid and r["kind"] in ("open", "close")} == {
        "crypto/tls.(*Conn).serverHandshake", "crypto/tls.(*Conn).Close"}
    (socket,) = [r for r in rows if r["pid"] == server.pid and r["kind"] == "socket"]
    assert socket["socket_source"] == "go_conn" and socket["fd"] > 2
    # a client sends a server name, a server receives one: the Go server's side has none
    assert [(r["pid"], r["server_name"]) for r in rows if r["kind"] == "sni"] == [(client.pid, "localhost")]
    # the call is reported once, by its client end
    assert [(e["process"]["pid"], e["event_type"]) for e in events] == [
        (client.pid, "ai.request"), (client.pid, "ai.response")]
    assert events[1]["data"]["choices"][0]["message"]["content"] == "Hello from the Go server."
    assert events[1]["data"]["usage"]["total_tokens"] == 11


def test_write_that_grows_the_stack_is_recorded_once(go_programs, tmp_path):
    """When a goroutine's stack is too small for Write's frame, Go grows it and starts Write again from
    its first instruction: the entry probe sits past that check, so each Write is recorded once (before,
    a 1 MiB HTTP/2 upload now and then held one DATA frame twice)."""
    n = 3000
    proc = subprocess.Popen([str(go_programs["stackgrow"]), "-n", str(n)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    rec = None
    try:
        assert json.loads(proc.stdout.readline()) == {"ready": True}
        (tmp_path / "rec").mkdir()
        rec = start_recorder(tmp_path / "rec", args=["--pid", str(proc.pid)])
        out, _ = proc.communicate("go\n", timeout=120)
        assert rec.stop() == 0, rec.log
    finally:
        if proc.poll() is None:
            proc.kill()
        if rec is not None and rec.proc.poll() is None:
            rec.proc.kill()
    assert proc.returncode == 0 and json.loads(out) == {"written": 7 * n, "read": 7 * n}
    rows = read_segments(rec.segments_dir).drop_columns(["ts_wall", "process_start"]).to_pylist()
    sent = sorted((r["stream_offset"], r["data"]) for r in rows
                  if r["kind"] == "data" and r["direction"] == "egress")
    assert b"".join(data for _, data in sent) == b"".join(b"<%05d>" % d for d in range(n))
    assert all(r["gap_reason"] is None for r in rows)


def test_go_programs_without_usable_tls_are_left_alone(go_programs, tmp_path):
    """A Go program without crypto/tls is not probed and not logged; one whose Go version passed
    arguments on the stack is logged once, counted, and runs as before."""
    old = with_go_version(go_programs["aiclient"], tmp_path / "aiclient-go116", "go1.16.8")
    pki = make_pki(tmp_path / "pki", "localhost")
    server = HypercornServer(pki, tmp_path, app=fake_providers.app)
    notls = subprocess.Popen([str(go_programs["notls"])], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True)
    legacy = subprocess.Popen([str(old), "-wait", "-base", server.url, "-tag", "old"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env={"SSL_CERT_FILE": str(pki.ca_file)})
    rec = None
    try:
        assert "ready" in notls.stdout.readline() and "ready" in legacy.stdout.readline()
        (tmp_path / "rec").mkdir()
        rec = start_recorder(tmp_path / "rec", args=["--pid", str(notls.pid), "--pid", str(legacy.pid)])
        echoed, _ = notls.communicate("hello go\n", timeout=30)
        out, _ = legacy.communicate("go\n", timeout=60)
        assert notls.returncode == 0 and echoed.splitlines()[-1] == "HELLO GO"
        assert legacy.returncode == 0
        answers = [json.loads(line)["answer"] for line in out.splitlines() if "answer" in line]
        assert answers == [fake_providers.ANSWER] * 2
        assert rec.stop() == 0, rec.log
    finally:
        for p in (notls, legacy):
            if p.poll() is None:
                p.kill()
        server.close()
    log = rec.log
    lines = [line for line in log.splitlines() if "cannot be probed" in line]
    assert len(lines) == 1, log[-3000:]
    assert "aiclient-go116 (go1.16.8, amd64)" in lines[0] and "on the stack" in lines[0]
    assert "notls" not in log
    totals = rec.final_totals()
    assert totals["go_programs_unsupported"] == 1 and totals["go_programs_probed"] == 0
    assert totals["calls"] == 0


def fresh_lines(proc: subprocess.Popen) -> list[str]:
    """Lines the process wrote from now on: read past what the pipe and our buffer can hold (a line is
    written after its call ended, so the last of these calls started after this function was called)."""
    held = fcntl.fcntl(proc.stdout.fileno(), F_GETPIPE_SZ) + io.DEFAULT_BUFFER_SIZE * 2
    lines, read = [], 0
    while read <= held:
        line = proc.stdout.readline()
        assert line, "the program stopped writing"
        lines.append(line)
        read += len(line)
    return lines


def test_traced_go_program_survives_recorders_coming_and_going(go_programs, tmp_path):
    """Calls in a loop while recorders attach, detach (SIGTERM) and are killed (SIGKILL): the program
    neither crashes nor answers differently."""
    pki = make_pki(tmp_path / "pki", "localhost")
    server = HypercornServer(pki, tmp_path, app=fake_providers.app)
    stop = tmp_path / "stop"
    client = subprocess.Popen([str(go_programs["aiclient"]), "-base", server.url, "-scenario", "loop", "-n",
                               "1000000", "-stop-file", str(stop), "-tag", "loop"], stdout=subprocess.PIPE,
                              text=True, env={"SSL_CERT_FILE": str(pki.ca_file)})
    lines: list[str] = []
    try:
        for i, sig in enumerate((signal.SIGTERM, signal.SIGKILL, signal.SIGTERM, signal.SIGKILL)):
            (tmp_path / f"rec{i}").mkdir()
            rec = start_recorder(tmp_path / f"rec{i}", args=["--pid", str(client.pid)])
            assert any(lib.get("tls_stack") == "go" for lib in rec.ready["libraries"]), rec.ready
            lines += fresh_lines(client)  # calls made while probed
            rec.proc.send_signal(sig)
            rec.proc.wait(timeout=120)
            if sig == signal.SIGTERM:
                assert rec.final_totals()["calls"] > 0
        lines.append(client.stdout.readline())  # and after the last recorder is gone
        stop.touch()
        out = client.stdout.read()  # from our buffer on: communicate() would read past it
        client.wait(timeout=120)
    finally:
        if client.poll() is None:
            client.kill()
        server.close()
    assert client.returncode == 0
    results = [json.loads(line) for line in lines + out.splitlines() if line.strip()]
    assert len(results) >= 9
    assert [r["marker"] for r in results] == [f"[loop-l{i}]" for i in range(len(results))]
    assert {(r["status"], r["answer"], r["prompt_tokens"], r["completion_tokens"]) for r in results} == {
        (200, fake_providers.ANSWER, 7, 16)}
