"""Identity through the analyzer: command-line redaction, socket-table parsing, socket records, and
the DuckDB tables that say which pod made which call."""

from __future__ import annotations

import struct
import subprocess

import duckdb

from analyzer.http.redaction import REDACTED, redact_cmdline
from conftest import BIN
from helpers.analyzer_inputs import FIXTURES
from recorder.capture.records import SOCKET_INFO, parse_socket_info
from recorder.identity.sockets import _addr
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


def test_socket_table_addresses():
    assert _addr("0100007F:01BB") == ("127.0.0.1", 443)
    # ::ffff:10.1.2.3 as /proc/net/tcp6 prints it (32-bit words in host order)
    assert _addr("0000000000000000FFFF00000302010A:1F90") == ("10.1.2.3", 8080)
    assert _addr("B80D0120000000000000000001000000:0050") == ("2001:db8::1", 80)


def test_socket_record_payload():
    v4 = SOCKET_INFO.pack(7, 2, 443, bytes([93, 184, 216, 34]) + bytes(12), 1)
    assert parse_socket_info(v4) == {"fd": 7, "peer_ip": "93.184.216.34", "peer_port": 443,
                                     "socket_source": "set_fd"}
    v6 = SOCKET_INFO.pack(-1, 10, 8443, bytes(10) + b"\xff\xff" + bytes([10, 0, 0, 9]), 2)
    assert parse_socket_info(v6) == {"fd": None, "peer_ip": "10.0.0.9", "peer_port": 8443,
                                     "socket_source": "thread_connect"}
    unknown = SOCKET_INFO.pack(3, 0, 0, bytes(16), 2)
    assert parse_socket_info(unknown)["peer_ip"] is None
    assert SOCKET_INFO.size == struct.calcsize("<iHH16sB7x") == 32


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
