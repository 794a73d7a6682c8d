"""Identity through the analyzer: command-line redaction, and the DuckDB tables that say which pod
made which call."""

from __future__ import annotations

import subprocess

import duckdb

from analyzer.http.redaction import REDACTED, redact_cmdline
from conftest import BIN
from helpers.analyzer_inputs import FIXTURES
from scripts.record_fixtures import CONTAINER_ID, POD_UID


def test_cmdline_secrets_are_redacted():
    args = ["python", "agent.py", "--api-key", "sk-live-abc", "--token=xyz", "OPENAI_API_KEY=sk-123",
            "--model", "gpt-4o", "sk-proj-0123456789abcdef", "AKIAABCDEFGHIJKLMNOP", "--verbose"]
    assert redact_cmdline(args) == [
        "python", "agent.py", "--api-key", REDACTED, f"--token={REDACTED}", f"OPENAI_API_KEY={REDACTED}",
        "--model", "gpt-4o", REDACTED, REDACTED, "--verbose"]
    assert redact_cmdline(["node", "server.js", "--port", "8080"]) == ["node", "server.js", "--port", "8080"]
    # curl's header arguments, and keys inside longer arguments
    assert redact_cmdline(["curl", "-H", "Authorization: Bearer sk-proj-abcdefghijkl", "-H",
                           "x-api-key:sk-ant-0123456789", "-d", '{"key": "AIzaSyA0123456789abc"}', "-H",
                           "Content-Type: application/json"]) == [
        "curl", "-H", f"Authorization: {REDACTED}", "-H", f"x-api-key: {REDACTED}", "-d",
        f'{{"key": "{REDACTED}"}}', "-H", "Content-Type: application/json"]


def test_duckdb_tables_name_the_pod(tmp_path):
    db = tmp_path / "audit.duckdb"
    subprocess.run([str(BIN / "oisp-analyze"), str(FIXTURES / "segments" / "sdk"), "--duckdb", str(db)],
                   check=True, capture_output=True)
    con = duckdb.connect(str(db), read_only=True)
    procs = con.execute("SELECT pod_uid, container_id, container_runtime, exe, cmdline FROM processes "
                        "WHERE pod_uid IS NOT NULL").fetchall()
    assert len(procs) == 1
    pod_uid, container_id, runtime, exe, cmdline = procs[0]
    assert (pod_uid, container_id, runtime) == (POD_UID, CONTAINER_ID, "cri-containerd")
    assert exe.startswith("/") and cmdline.endswith("-m testbed.sdk_workload")
    calls = con.execute("SELECT DISTINCT pod_uid, server_name FROM ai_calls ORDER BY server_name").fetchall()
    assert calls == [(POD_UID, "api.anthropic.com"), (POD_UID, "api.openai.com")]
    conns = con.execute("SELECT count(*) FROM connections WHERE peer_port = 443 AND server_name IS NOT NULL "
                        "AND role = 'client'").fetchone()[0]
    assert conns == 3


def test_version_1_segments_still_analyze(tmp_path):
    """h1_v1 was recorded in format version 1 (no identity rows): it reads, with nulls."""
    db = tmp_path / "v1.duckdb"
    subprocess.run([str(BIN / "oisp-analyze"), str(FIXTURES / "segments" / "h1_v1"), "--duckdb", str(db)],
                   check=True, capture_output=True)
    con = duckdb.connect(str(db), read_only=True)
    assert con.execute("SELECT count(*), count(server_name), count(pod_uid) FROM connections").fetchone() \
        == (1, 0, 0)


def test_connection_attrs_say_the_tls_stack_and_what_is_unknown():
    from analyzer.ai.context import connection_attrs
    from analyzer.model import ConnectionInfo

    def info(**kw) -> ConnectionInfo:
        return ConnectionInfo("node", "1-ab-2", 1, 1, "app", 0, 1, "/app/server", **kw)

    # format 2 segments name no stack: their events stay as they were, saying nothing more
    assert "tls_stack" not in connection_attrs(info()) and "identity_unknown" not in connection_attrs(info())
    client = connection_attrs(info(tls_stack="go", server_name="api.openai.com", peer_ip="10.0.0.1",
                                   peer_port=443, fd=7, socket_source="go_conn"))
    assert client["tls_stack"] == "go" and "identity_unknown" not in client
    # a server's end: no name was sent to it, and its accepted socket closed before it was looked up
    server = connection_attrs(info(tls_stack="go", fd=4, socket_source="go_conn"))
    assert server["identity_unknown"] == ["server_name", "peer_address"]
    assert connection_attrs(info(tls_stack="openssl"))["identity_unknown"] == ["server_name", "peer_address",
                                                                              "socket_fd"]
