"""Events from segments recorded by the real recorder while the real openai and anthropic SDKs called
fake providers under their real host names (scripts/record_fixtures.py sdk): golden, valid, exact
against what the SDKs themselves returned, and free of the API key."""

from __future__ import annotations

import json
import subprocess

from analyzer.ai.schema import validation_errors
from conftest import BIN, GOLDEN_KEY_ARGS, read_segments
from helpers.analyzer_inputs import FIXTURES
from testbed.sdk_workload import CANARY_KEY

SEGMENTS = FIXTURES / "segments" / "sdk"
TRUTH = json.loads((FIXTURES / "golden" / "sdk.truth.json").read_text())


def run(tmp_path, *extra):
    out, xs = tmp_path / "events.jsonl", tmp_path / "exchanges.jsonl"
    cmd = [str(BIN / "oisp-analyze"), str(SEGMENTS), "--out", str(out), "--exchanges", str(xs),
           *GOLDEN_KEY_ARGS, *extra]
    subprocess.run(cmd, check=True, capture_output=True)
    return out, xs


def test_golden_and_deterministic(tmp_path):
    out, xs = run(tmp_path)
    assert out.read_bytes() == (FIXTURES / "golden" / "sdk.events.jsonl").read_bytes()
    assert xs.read_bytes() == (FIXTURES / "golden" / "sdk.exchanges.jsonl").read_bytes()


def test_events_match_what_the_sdks_saw(tmp_path):
    out, _ = run(tmp_path)
    events = [json.loads(line) for line in out.read_text().splitlines()]
    assert all(validation_errors(e) == [] for e in events)
    reqs = [e for e in events if e["event_type"] == "ai.request"]
    resps = {e["data"]["request_id"]: e for e in events if e["event_type"] == "ai.response"}
    assert len(reqs) == 6 and len(resps) == 6  # every request has its response, paired by exchange
    pairs = [(r, resps[r["data"]["request_id"]]) for r in reqs]
    names = [(r["data"]["provider"]["name"], r["data"]["request_type"], r["data"]["streaming"])
             for r, _ in pairs]
    assert names == [("openai", "chat", False), ("openai", "chat", True), ("openai", "embedding", False),
                     ("openai", "chat", False), ("anthropic", "chat", False), ("anthropic", "chat", True)]
    expect = [TRUTH["chat"], TRUTH["chat_stream"], None, None, TRUTH["anthropic"], TRUTH["anthropic_stream"]]
    for (req, resp), truth in zip(pairs, expect, strict=True):
        assert req["confidence"]["level"] == "high" and req["process"]["pid"] > 0
        if truth is None:
            continue
        assert resp["data"]["choices"][0]["message"]["content"] == truth["text"]
        u, t = resp["data"]["usage"], truth["usage"]
        assert u["completion_tokens"] == t.get("completion_tokens", t.get("output_tokens"))
        if "input_tokens" in t:  # Anthropic: input + cache read + cache creation
            assert u["prompt_tokens"] == t["input_tokens"] + t["cache_read_input_tokens"] + t[
                "cache_creation_input_tokens"]
        else:
            assert u["prompt_tokens"] == t["prompt_tokens"] and u["total_tokens"] == t["total_tokens"]
    limited = pairs[3][1]["data"]
    assert limited["status_code"] == TRUTH["rate_limited"]["status"] == 429 and not limited["success"]
    assert limited["error"]["code"] == "rate_limit_exceeded"


def test_api_key_reaches_no_output(tmp_path):
    for mode in ("full", "hash", "none"):
        out, xs = run(tmp_path, "--content", mode)
        for path in (out, xs):
            text = path.read_text()
            assert CANARY_KEY not in text and CANARY_KEY[8:20] not in text


def test_duckdb_tables(tmp_path):
    import duckdb

    db = tmp_path / "audit.duckdb"
    subprocess.run([str(BIN / "oisp-analyze"), str(SEGMENTS), "--duckdb", str(db)], check=True,
                   capture_output=True)
    con = duckdb.connect(str(db))
    counts = {t: con.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0]
              for t in ("events", "ai_calls", "exchanges", "connections")}
    assert counts == {"events": 12, "ai_calls": 6, "exchanges": 6, "connections": 3}
    assert con.execute("SELECT count(*), sum(connections) FROM processes").fetchall() == [(1, 3)]
    rows = con.execute("SELECT provider, streaming, status_code, total_tokens FROM ai_calls "
                       "WHERE request_type = 'chat' ORDER BY request_ts").fetchall()
    assert rows == [("openai", False, 200, 26), ("openai", True, 200, 22), ("openai", False, 429, None),
                    ("anthropic", False, 200, 147), ("anthropic", True, 200, 147)]
    tokens = con.execute("SELECT sum(total_tokens) FROM ai_calls WHERE provider = 'anthropic'").fetchall()
    assert tokens == [(294,)]
    assert CANARY_KEY not in json.dumps(con.execute("SELECT event_json FROM events").fetchall())


def test_events_say_which_pod_and_process(tmp_path):
    """The SDK client ran in a cgroup named like a kubelet's containerd container (record_fixtures):
    both events of every call carry that pod and container, the process, and the TLS server name."""
    from scripts.record_fixtures import CONTAINER_ID, POD_UID

    out, _ = run(tmp_path)
    events = [json.loads(line) for line in out.read_text().splitlines()]
    procs = [r for r in read_segments(SEGMENTS).to_pylist() if r["kind"] == "process"]
    client_pid = next(r["pid"] for r in procs if r["cmdline"] and "testbed.sdk_workload" in r["cmdline"])
    assert events
    for e in events:
        assert e["host"]["k8s"] == {"pod_uid": POD_UID, "node_name": e["host"]["hostname"]}
        assert e["host"]["container"] == {"id": CONTAINER_ID, "runtime": "containerd"}
        p = e["process"]
        assert p["pid"] == client_pid and p["cmdline_args"][-2:] == ["-m", "testbed.sdk_workload"]
        assert p["exe"].startswith("/") and p["ppid"] > 0 and p["start_time"].endswith("Z")
        assert p["cgroup"].endswith(f"cri-containerd-{CONTAINER_ID}.scope")
        a = e["attrs"]
        host = e["data"]["provider"]["endpoint"].split("/")[2] if "provider" in e["data"] else None
        assert a["server_name"] in ("api.openai.com", "api.anthropic.com")
        assert host is None or host == a["server_name"]
        assert a["peer_address"] == "127.0.0.1:443" and a["socket_source"] == "set_fd"
