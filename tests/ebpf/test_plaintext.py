"""Plaintext HTTP to in-cluster model servers, captured from the socket system calls: real clients
(openai SDK plain and streamed, ollama's client, httpx with 20 concurrent calls, curl over HTTP/1.1
and h2c) against a plaintext OpenAI- and Ollama-shaped server, on loopback and across a network
namespace pair; what must never be recorded (out-of-scope port, TLS on an in-scope port, another
protocol, file writes); one event per call when both ends are on the node, the server's end alone
when the client is not traced."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest

from conftest import BIN, read_segments, start_recorder
from helpers.ai_calls import pairs
from testbed import fake_providers
from testbed.ground_truth import GroundTruthLog, recording
from testbed.hypercorn_server import HypercornServer
from testbed.pki import make_pki

pytestmark = pytest.mark.ebpf

REPO = Path(__file__).resolve().parents[2]
NOISE = (b"noise-out-of-scope", b"binary-noise", b"noise-file")


def analyze(segments: Path, out: Path) -> list[dict]:
    subprocess.run([str(BIN / "oisp-analyze"), str(segments), "--out", str(out), "--content", "full"],
                   check=True, capture_output=True)
    return [json.loads(line) for line in out.read_text().splitlines()]


def run_workload(base: str, *args: str, env: dict | None = None, netns: str | None = None) -> dict:
    cmd = [sys.executable, "-m", "testbed.plain_workload", base, *args]
    if netns:
        cmd = ["ip", "netns", "exec", netns, *cmd]
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


class EchoServer:
    """A non-HTTP protocol on an in-scope port: it greets, then echoes."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                data = conn.recv(4096)
                conn.sendall(b"\x01ECHO " + data)

    def close(self) -> None:
        self.sock.close()


NOISE_CLIENT = """
import socket, ssl, sys, httpx
out_of_scope, ca, path = sys.argv[1], sys.argv[4], sys.argv[5]
tls_port, echo_port = int(sys.argv[2]), int(sys.argv[3])
httpx.post(out_of_scope + "/v1/chat/completions", json={"model": "gpt-4o-mini",
           "messages": [{"role": "user", "content": "[noise-out-of-scope] hi"}]})
ctx = ssl.create_default_context(cafile=ca)
with ctx.wrap_socket(socket.create_connection(("localhost", tls_port)), server_hostname="localhost") as s:
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\\r\\nHost: localhost\\r\\ncontent-length: 2\\r\\n\\r\\n{}")
    s.recv(65536)
with socket.create_connection(("127.0.0.1", echo_port)) as s:
    s.sendall(b"\\x00\\x01binary-noise payload")
    s.recv(4096)
with open(path, "wb") as f:
    for _ in range(100):
        f.write(b"POST / HTTP/1.1 noise-file\\n")
        f.flush()
"""


@pytest.fixture(scope="module", params=["socket", "syscalls"])
def loopback(request, tmp_path_factory):
    """Both ends on the node: the server in this process, the clients in others. Run with each of the
    recorder's two ways of seeing plaintext reads and writes (plaintext_hooks)."""
    work = tmp_path_factory.mktemp("plain")
    log = GroundTruthLog(work / "server-truth.jsonl")
    server = HypercornServer(None, work, app=recording(fake_providers.app, log))
    noise_server = HypercornServer(None, work, app=fake_providers.app)  # its port is out of scope
    pki = make_pki(work / "pki", "localhost")
    tls_server = HypercornServer(pki, work, app=fake_providers.app)  # TLS on an in-scope port
    echo = EchoServer()
    scope = [server.port, tls_server.port, echo.port]
    (work / "rec").mkdir()
    rec = start_recorder(work / "rec", config={"plaintext_ports": scope, "plaintext_hooks": request.param})
    try:
        truth = run_workload(server.url)
        noise = subprocess.run([sys.executable, "-c", NOISE_CLIENT, noise_server.url, str(tls_server.port),
                                str(echo.port), str(pki.ca_file), str(work / "noise.txt")],
                               capture_output=True, text=True, timeout=120)
        assert noise.returncode == 0, noise.stderr
        assert rec.stop() == 0, rec.log[-3000:]
    finally:
        for s in (server, noise_server, tls_server, echo):
            s.close()
    events = analyze(rec.segments_dir, work / "events.jsonl")
    return {"truth": truth, "events": events, "rec": rec, "server": server, "log": log.entries(),
            "tls_port": tls_server.port, "echo_port": echo.port, "hooks": request.param}


def check_calls(truth: dict, events: list[dict]) -> dict:
    """Every call once (a request and its response), exact against what the client got."""
    plain = [e for e in events if e["attrs"].get("tls_stack") == "plaintext"]
    found = pairs(plain)  # fails on a call reported twice
    assert set(found) == {c["marker"] for c in truth["calls"]}
    for c in truth["calls"]:
        req, resp = found[c["marker"]]
        assert resp is not None, c["marker"]
        assert req["data"]["model"]["id"] == c["model"], c["marker"]
        assert bool(req["data"].get("streaming")) is c["streaming"], c["marker"]
        assert resp["data"]["status_code"] == 200 and resp["data"]["success"] is True
        choices = resp["data"].get("choices") or []
        assert choices and choices[0]["message"]["content"] == c["text"], c["marker"]
        if c["usage"]:
            assert [resp["data"]["usage"]["prompt_tokens"], resp["data"]["usage"]["completion_tokens"]] \
                == c["usage"], c["marker"]
        assert req["process"]["pid"] == c["pid"] and req["attrs"]["process_role"] == "client", c["marker"]
        assert req["source"]["capture_method"] == "ebpf_tracepoint"
        assert req["data"]["provider"]["endpoint"].startswith("http://")
    return found


def test_every_plaintext_call_exact_and_once(loopback):
    truth = loopback["truth"]
    found = check_calls(truth, loopback["events"])
    assert len(truth["calls"]) == 27 and {c["client"] for c in truth["calls"]} == {
        "openai-sdk", "ollama", "httpx", "curl", "raw-socket"}
    # the server's own log: one exchange per call, and what it sent is what the events say
    assert len(loopback["log"]) == len(truth["calls"])
    port = loopback["server"].port
    for c in truth["calls"]:
        req, _ = found[c["marker"]]
        # where the server was: its address, and (its end captured too) its process
        assert req["attrs"]["peer_address"] == f"127.0.0.1:{port}"
    h2c = found["[plain-curl-h2c]"][0]
    assert h2c["attrs"]["http_version"] == "2"
    ollama = found["[plain-ollama]"][0]
    assert ollama["attrs"]["api_format"] == "ollama" or "ollama" in ollama["attrs"]["provider_id"]


def test_the_hooks_asked_for_are_the_ones_used(loopback):
    assert f"(hooks: {loopback['hooks']})" in loopback["rec"].log


def test_both_ends_on_the_node_are_one_event_naming_the_server(loopback):
    events = [e for e in loopback["events"] if e["attrs"].get("tls_stack") == "plaintext"]
    assert events and all(e["attrs"]["process_role"] == "client" for e in events)
    assert {e["attrs"]["server_pid"] for e in events} == {os.getpid()}  # the server runs in this process
    table = read_segments(loopback["rec"].segments_dir)
    opens = [r for r in table.select(["kind", "tls_stack", "func"]).to_pylist()
             if r["kind"] == "open" and r["tls_stack"] == "plaintext"]
    # the server's ends were captured as well (accept), and left to the clients' events
    assert {r["func"] for r in opens} == {"connect", "accept"}


def test_noise_is_never_recorded(loopback):
    table = read_segments(loopback["rec"].segments_dir)
    rows = table.select(["kind", "tls_stack", "data", "peer_port", "local_port"]).to_pylist()
    for r in rows:
        data = r["data"] or b""
        assert not any(marker in data for marker in NOISE), data[:80]
    plain_ports = {p for r in rows if r["kind"] == "socket" and r["tls_stack"] == "plaintext"
                   for p in (r["peer_port"], r["local_port"])}
    server = loopback["server"].port
    assert server in plain_ports
    # TLS on an in-scope port: its ciphertext is not plaintext capture (its plaintext came from libssl)
    assert loopback["tls_port"] not in plain_ports and loopback["echo_port"] not in plain_ports
    tls_rows = [r for r in rows if r["kind"] == "socket" and r["tls_stack"] == "openssl"
                and r["peer_port"] == loopback["tls_port"]]
    assert tls_rows
    totals = loopback["rec"].final_totals()
    assert totals["dropped_records"] == 0 and totals["truncated_bytes"] == 0


def test_server_end_alone_reports_the_calls(tmp_path):
    """A client the recorder does not trace (here: filtered out; in a cluster, another node): the model
    server's end reports the calls, saying it is the server and who called (peer address)."""
    server = subprocess.Popen([sys.executable, "-m", "testbed.plain_server", str(tmp_path / "srv"),
                               "127.0.0.1", "0"], cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    try:
        ready = json.loads(server.stdout.readline())
        port = ready["port"]
        (tmp_path / "rec").mkdir()
        rec = start_recorder(tmp_path / "rec", config={"plaintext_ports": [port]},
                             args=["--pid", str(server.pid)])
        truth = run_workload(f"http://127.0.0.1:{port}", "--only", "openai")
        assert rec.stop() == 0, rec.log[-3000:]
    finally:
        server.stdin.close()
        server.wait(timeout=30)
    events = analyze(rec.segments_dir, tmp_path / "events.jsonl")
    found = pairs(events)
    assert set(found) == {"[plain-openai]", "[plain-openai-stream]"}
    for c in truth["calls"]:
        req, resp = found[c["marker"]]
        assert req["attrs"]["process_role"] == "server" and req["process"]["pid"] == server.pid
        assert req["attrs"]["peer_address"].startswith("127.0.0.1:")
        assert resp["data"]["choices"][0]["message"]["content"] == c["text"]


@pytest.fixture
def netns_pair():
    """A network namespace joined to the host's by a veth pair: 10.201.0.1 here, 10.201.0.2 there."""
    name = f"oisp{uuid.uuid4().hex[:8]}"
    host_if, ns_if = f"v{name[-8:]}h", f"v{name[-8:]}n"
    steps = [["ip", "netns", "add", name],
             ["ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if],
             ["ip", "link", "set", ns_if, "netns", name],
             ["ip", "addr", "add", "10.201.0.1/24", "dev", host_if], ["ip", "link", "set", host_if, "up"],
             ["ip", "netns", "exec", name, "ip", "addr", "add", "10.201.0.2/24", "dev", ns_if],
             ["ip", "netns", "exec", name, "ip", "link", "set", ns_if, "up"],
             ["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"]]
    try:
        for step in steps:
            subprocess.run(step, check=True, capture_output=True)
        yield name
    finally:
        subprocess.run(["ip", "link", "del", host_if], capture_output=True)
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def test_across_a_network_namespace_pair(tmp_path, netns_pair):
    """The model server in its own network namespace (as a pod), the client in the host's: one event per
    call, from the client, naming the server's address and process."""
    server = subprocess.Popen(["ip", "netns", "exec", netns_pair, sys.executable, "-m",
                               "testbed.plain_server", str(tmp_path / "srv"), "10.201.0.2", "0"], cwd=REPO,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        ready = json.loads(server.stdout.readline())
        (tmp_path / "rec").mkdir()
        rec = start_recorder(tmp_path / "rec", config={"plaintext_ports": [ready["port"]]})
        truth = run_workload(f"http://10.201.0.2:{ready['port']}")
        assert rec.stop() == 0, rec.log[-3000:]
    finally:
        server.stdin.close()
        server.wait(timeout=30)
    events = analyze(rec.segments_dir, tmp_path / "events.jsonl")
    found = check_calls(truth, events)
    for req, _ in found.values():
        assert req["attrs"]["peer_address"] == f"10.201.0.2:{ready['port']}"
        assert req["attrs"]["server_pid"] == ready["pid"]
        assert req["attrs"]["local_address"].startswith("10.201.0.1:")
    served = [json.loads(line) for line in (tmp_path / "srv" / "server-truth.jsonl").read_text().splitlines()]
    assert len(served) == len(truth["calls"])


def test_a_named_service_gets_its_provider(loopback, tmp_path):
    """analyzer.endpoints names a model server by host:port (a Service): its calls carry that provider."""
    port = loopback["server"].port
    config = tmp_path / "analyzer.yaml"
    config.write_text(json.dumps({"analyzer": {"endpoints": {f"127.0.0.1:{port}": {"provider": "vllm"}}}}))
    out = tmp_path / "events.jsonl"
    subprocess.run([str(BIN / "oisp-analyze"), str(loopback["rec"].segments_dir), "--out", str(out),
                    "--config", str(config)], check=True, capture_output=True)
    events = [json.loads(line) for line in out.read_text().splitlines()]
    plain = [e for e in events if e["attrs"].get("tls_stack") == "plaintext"]
    assert len(plain) == 2 * len(loopback["truth"]["calls"])
    assert {e["attrs"]["provider_id"] for e in plain} == {"vllm"}
    assert {e["attrs"]["provider_matched_by"] for e in plain} == {"user"}
