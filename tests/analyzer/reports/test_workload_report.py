"""`oisp-analyze report`: per-workload sums that equal DuckDB's own over ai_calls, exact time
boundaries, the same answer from an events file and from a DuckDB file, and one clear line, exit 2,
for every input it cannot use."""

from __future__ import annotations

import copy
import json
import math
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from analyzer.reports.time_bounds import iso, parse_time_bound
from analyzer.sinks.duckdb_tables import DuckDBSink
from conftest import BIN, GOLDEN_KEY_ARGS
from helpers.analyzer_inputs import FIXTURES

GOLDEN = [json.loads(line) for line in (FIXTURES / "golden" / "sdk.events.jsonl").read_text().splitlines()]
REQUEST = next(e for e in GOLDEN if e["event_type"] == "ai.request")
RESPONSE = next(e for e in GOLDEN if e["event_type"] == "ai.response"
                and e["data"]["request_id"] == REQUEST["data"]["request_id"])
FAILED = next(e for e in GOLDEN if e["event_type"] == "ai.response" and not e["data"]["success"])


def k8s(namespace: str, kind: str, name: str, sa: str, pod: str) -> dict:
    return {"namespace": namespace, "pod_name": pod, "pod_uid": f"uid-{pod}", "node_name": "node-a",
            "workload_kind": kind, "workload_name": name, "service_account": sa}


CHAT_API = k8s("chat", "Deployment", "chat-api", "chat-sa", "chat-api-7d9f8b6c5d-x2k4q")
CHAT_WORKER = k8s("chat", "Deployment", "chat-worker", "chat-sa", "chat-worker-5c6d7e8f9a-p9m3z")
SUMMARIZER = k8s("batch", "CronJob", "nightly-summarizer", "batch-sa", "nightly-summarizer-29100000-abcde")
INDEXER = k8s("batch", "StatefulSet", "indexer", "batch-sa", "indexer-0")


def call(n: int, ts: str, pod: dict | None, *, provider: str = "openai", model: str = "gpt-4o-mini",
         usage: tuple[int, int, float] | None = (100, 20, 0.0001), latency: int = 200, status: int = 200,
         estimated: bool = False, answered: bool = True, node: str = "node-a") -> list[dict]:
    """The request and response events of one call, shaped as the analyzer writes them."""
    q = copy.deepcopy(REQUEST)
    q.update(event_id=f"q{n:04d}", ts=ts)
    q["data"].update(request_id=f"req_{n:04d}", model={"id": model})
    q["data"]["provider"]["name"] = provider
    q["attrs"]["provider_id"] = provider
    q["host"]["hostname"] = node
    if pod is None:  # a process on the node, outside Kubernetes
        del q["host"]["k8s"], q["host"]["container"]
    else:
        q["host"]["k8s"] = {**pod, "node_name": node}
    if not answered:
        return [q]
    r = copy.deepcopy(FAILED if status >= 400 else RESPONSE)
    at = datetime.fromisoformat(ts) + timedelta(milliseconds=latency)
    r.update(event_id=f"r{n:04d}", ts=iso(at), host=q["host"], process=q["process"])
    r["attrs"]["provider_id"] = provider
    r["data"].update(request_id=q["data"]["request_id"], latency_ms=latency, status_code=status)
    r["data"]["provider"]["name"] = provider
    if usage is not None and status < 400:
        prompt, completion, cost = usage
        r["data"]["usage"] = {"prompt_tokens": prompt, "completion_tokens": completion,
                              "total_tokens": prompt + completion, "total_cost_usd": cost}
        if estimated:  # as the analyzer marks counts it estimated with tiktoken
            r["data"]["usage"].update(estimated=True, estimated_by="tiktoken:o200k_base")
    else:
        r["data"].pop("usage", None)
    return [q, r]


# 14 calls over six hours: 4 workloads in 2 namespaces, 2 service accounts, 2 nodes, a host process
# outside Kubernetes, a rate-limited call, a call never answered, estimated token counts
CALLS = [
    call(1, "2026-12-01T08:00:00.000000Z", CHAT_API, usage=(120, 30, 0.00004), latency=180),
    call(2, "2026-12-01T09:15:30.250000Z", CHAT_API, usage=(200, 50, 0.00006), latency=240),
    call(3, "2026-12-01T10:00:00.000000Z", CHAT_API, status=429, latency=15),
    call(4, "2026-12-01T10:00:00.000001Z", CHAT_API, usage=(80, 10, 0.00002), latency=150, node="node-b"),
    call(5, "2026-12-01T11:30:00.000000Z", CHAT_WORKER, provider="anthropic", model="claude-haiku-4-5",
         usage=(1000, 200, 0.0018), latency=900),
    call(6, "2026-12-01T12:45:00.000000Z", CHAT_WORKER, usage=(400, 90, 0.00012), latency=1100,
         estimated=True),
    call(7, "2026-12-01T09:59:59.999999Z", SUMMARIZER, provider="anthropic", model="claude-sonnet-4-5",
         usage=(20000, 1500, 0.0825), latency=9000),
    call(8, "2026-12-01T11:00:00.000000Z", SUMMARIZER, provider="anthropic", model="claude-sonnet-4-5",
         usage=(18000, 1200, 0.072), latency=7000),
    call(9, "2026-12-01T13:00:00.000000Z", SUMMARIZER, provider="anthropic", model="claude-sonnet-4-5",
         usage=(22000, 1800, 0.093), latency=12000, node="node-b"),
    call(10, "2026-12-01T12:00:00.000000Z", INDEXER, model="text-embedding-3-small", usage=(5000, 0, 0.0001),
         latency=300),
    call(11, "2026-12-01T12:30:00.000000Z", INDEXER, model="text-embedding-3-small", answered=False),
    call(12, "2026-12-01T08:30:00.000000Z", None, usage=(300, 60, 0.00009), latency=400),
    call(13, "2026-12-01T13:59:59.000000Z", None, usage=(50, 5, 0.00001), latency=100),
    call(14, "2026-12-01T14:00:00.000000Z", CHAT_API, usage=(90, 30, 0.00002), latency=210),
]
EVENTS = [ev for c in CALLS for ev in c]


def write_sources(events: list[dict], tmp: Path) -> tuple[Path, Path]:
    """The events as `--out` writes them, and as `--duckdb` writes them (through DuckDBSink)."""
    jsonl = tmp / "events.jsonl"
    jsonl.write_text("".join(json.dumps(ev, sort_keys=True) + "\n" for ev in events))
    db = tmp / "calls.duckdb"
    sink = DuckDBSink(db)
    for ev in events:
        sink.add_event(ev)
    sink.close()
    return jsonl, db


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> tuple[Path, Path]:
    return write_sources(EVENTS, tmp_path_factory.mktemp("report"))


def run(*args) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "oisp-analyze"), "report", *map(str, args)], capture_output=True,
                          text=True, timeout=120)


def report_json(*args) -> dict:
    p = run(*args, "--format", "json")
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


# The same numbers, asked of DuckDB directly, written independently of the report's SQL.
DIRECT = """
SELECT pod_namespace, workload_kind, workload_name, service_account, count(*) AS calls,
       sum(CASE WHEN success THEN 0 ELSE 1 END) AS errors, sum(prompt_tokens) AS prompt_tokens,
       sum(completion_tokens) AS completion_tokens, sum(total_tokens) AS total_tokens,
       sum(CASE WHEN tokens_estimated THEN 1 ELSE 0 END) AS estimated_calls, sum(cost_usd) AS cost_usd,
       median(latency_ms) AS p50_latency_ms, quantile_cont(latency_ms, 0.95) AS p95_latency_ms
FROM ai_calls {where} GROUP BY pod_namespace, workload_kind, workload_name, service_account
"""


def direct(db: Path, where: str = "") -> dict[tuple, dict]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        cur = con.execute(DIRECT.format(where=where))
        names = [d[0] for d in cur.description]
        rows = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
    finally:
        con.close()
    out = {}
    for r in rows:
        ns, kind, name, sa = (r.pop(k) for k in ("pod_namespace", "workload_kind", "workload_name",
                                                 "service_account"))
        out[(ns, f"{kind}/{name}" if name else None, sa)] = r
    return out


def same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], float) or isinstance(b[k], float):
            assert a[k] == pytest.approx(b[k], rel=1e-12, abs=1e-15), k
        else:
            assert a[k] == b[k], k


MEASURES = ["calls", "errors", "prompt_tokens", "completion_tokens", "total_tokens", "estimated_calls",
            "cost_usd", "p50_latency_ms", "p95_latency_ms"]


def check_against_duckdb(out: dict, db: Path, where: str = "") -> None:
    expected = direct(db, where)
    got = {(g["namespace"], g["workload"], g["service_account"]): {m: g[m] for m in MEASURES}
           for g in out["groups"]}
    assert got.keys() == expected.keys()
    for key in got:
        same(got[key], expected[key])
    con = duckdb.connect(str(db), read_only=True)
    try:
        sums = con.execute(f"SELECT count(*), sum(cost_usd), sum(total_tokens), median(latency_ms) "
                           f"FROM ai_calls {where}").fetchone()
    finally:
        con.close()
    total = out["total"]
    assert (total["calls"], total["total_tokens"]) == (sums[0], sums[2])
    assert total["cost_usd"] == pytest.approx(sums[1], rel=1e-12)
    assert total["p50_latency_ms"] == sums[3]
    assert total["calls"] == sum(g["calls"] for g in out["groups"])


def test_sums_equal_duckdbs(sources):
    jsonl, db = sources
    out = report_json(db)
    assert out["group_by"] == ["namespace", "workload", "service_account"]
    assert (out["since"], out["until"]) == (None, None)
    check_against_duckdb(out, db)
    # what the data says, by hand: 14 calls, the 429 and the unanswered one failed
    assert (out["total"]["calls"], out["total"]["errors"], out["total"]["estimated_calls"]) == (14, 2, 1)
    by_key = {(g["namespace"], g["workload"], g["service_account"]): g for g in out["groups"]}
    assert by_key[("chat", "Deployment/chat-api", "chat-sa")]["calls"] == 5
    assert by_key[("chat", "Deployment/chat-api", "chat-sa")]["errors"] == 1
    assert by_key[("batch", "StatefulSet/indexer", "batch-sa")]["errors"] == 1
    assert by_key[(None, None, None)]["calls"] == 2
    assert by_key[("batch", "CronJob/nightly-summarizer", "batch-sa")]["cost_usd"] == pytest.approx(0.2475)


def test_groups_sorted_by_cost_then_calls_then_keys(sources):
    groups = report_json(sources[1], "--by", "namespace,workload")["groups"]
    assert groups[0]["workload"] == "CronJob/nightly-summarizer"

    def order(g):
        cost = g["cost_usd"]
        return (cost is None, -(cost or 0), -g["calls"], [(v is None, v or "") for v in
                                                          (g["namespace"], g["workload"])])

    assert groups == sorted(groups, key=order)


@pytest.mark.parametrize("since, until, where", [
    # since is inclusive, until exclusive, to the microsecond
    ("2026-12-01T10:00:00Z", None, "WHERE request_ts >= '2026-12-01T10:00:00.000000Z'"),
    (None, "2026-12-01T10:00:00Z", "WHERE request_ts < '2026-12-01T10:00:00.000000Z'"),
    ("2026-12-01T10:00:00.000001Z", "2026-12-01T14:00:00Z",
     "WHERE request_ts >= '2026-12-01T10:00:00.000001Z' AND request_ts < '2026-12-01T14:00:00.000000Z'"),
    ("2026-12-01T11:00:00+01:00", "2026-12-01T13:00", "WHERE request_ts >= '2026-12-01T10:00:00.000000Z' "
     "AND request_ts < '2026-12-01T13:00:00.000000Z'"),
    ("2026-12-01", "2026-12-02", ""),
])
def test_since_until_boundaries(sources, since, until, where):
    args = [sources[1]] + (["--since", since] if since else []) + (["--until", until] if until else [])
    out = report_json(*args)
    check_against_duckdb(out, sources[1], where)
    assert out["since"] == (iso(parse_time_bound(since, datetime.now(UTC))) if since else None)


def test_boundaries_split_the_calls(sources):
    before = report_json(sources[1], "--until", "2026-12-01T10:00:00Z")["total"]["calls"]
    after = report_json(sources[1], "--since", "2026-12-01T10:00:00Z")["total"]["calls"]
    assert (before, after) == (4, 10)  # 08:00, 08:30, 09:15, 09:59:59.999999 before
    exactly = report_json(sources[1], "--since", "2026-12-01T10:00:00Z", "--until",
                          "2026-12-01T10:00:00.000001Z")
    assert exactly["total"]["calls"] == 1 and exactly["groups"][0]["errors"] == 1  # the 429 at 10:00:00


def test_jsonl_and_duckdb_give_the_same_report(sources):
    jsonl, db = sources
    for by in ("namespace,workload,service_account", "node,provider,model", "service_account"):
        a = report_json(jsonl, "--by", by, "--since", "2026-12-01T09:00:00Z")
        b = report_json(db, "--by", by, "--since", "2026-12-01T09:00:00Z")
        assert a.pop("source") == str(jsonl) and b.pop("source") == str(db)
        assert a == b


def test_by_variants(sources):
    db = sources[1]
    by_model = report_json(db, "--by", "provider,model")
    assert by_model["group_by"] == ["provider", "model"]
    assert [(g["provider"], g["model"]) for g in by_model["groups"]][0] == ("anthropic", "claude-sonnet-4-5")
    assert set(by_model["groups"][0]) == {"provider", "model", *MEASURES}
    by_node = {g["node"]: g["calls"] for g in report_json(db, "--by", "node")["groups"]}
    assert by_node == {"node-a": 12, "node-b": 2}
    by_sa = {g["service_account"]: g["calls"] for g in report_json(db, "--by", "service_account")["groups"]}
    assert by_sa == {"chat-sa": 7, "batch-sa": 5, None: 2}
    order = report_json(db, "--by", "workload,namespace")["groups"][0]
    assert list(order)[:2] == ["workload", "namespace"]
    for out in (by_model, report_json(db, "--by", "node"), report_json(db, "--by", "service_account")):
        assert out["total"] == by_model["total"]


def test_table_output(sources):
    p = run(sources[1])
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0].startswith("14 AI call(s) in ")
    assert lines[1].split()[:4] == ["namespace", "workload", "service", "account"]
    assert lines[3].split()[:5] == ["batch", "CronJob/nightly-summarizer", "batch-sa", "3", "0"]
    assert lines[3].split()[9] == "0.247500"  # cost: after calls, errors, 3 token sums, est.
    host = next(line for line in lines if line.startswith("- "))  # outside Kubernetes: no keys
    assert host.split()[:4] == ["-", "-", "-", "2"]
    assert lines[-2].startswith("---") and lines[-1].split()[:3] == ["total", "14", "2"]


def test_empty_range(sources):
    p = run(sources[1], "--since", "2027-01-01")
    assert (p.returncode, p.stdout) == (0, f"no AI calls in {sources[1]} since 2027-01-01T00:00:00Z\n")
    out = report_json(sources[0], "--until", "2026-01-01")
    assert (out["groups"], out["until"]) == ([], "2026-01-01T00:00:00Z")


def test_durations_back_from_now(tmp_path):
    now = datetime.now(UTC)
    events = call(1, iso(now - timedelta(hours=3)), CHAT_API) + call(2, iso(now - timedelta(minutes=20)),
                                                                     CHAT_WORKER)
    jsonl, db = write_sources(events, tmp_path)
    assert report_json(db, "--since", "1h")["total"]["calls"] == 1
    assert report_json(jsonl, "--since", "240m", "--until", "2h")["groups"][0]["workload"] == \
        "Deployment/chat-api"
    assert report_json(db, "--since", "1d")["total"]["calls"] == 2


def test_parse_time_bound():
    now = datetime(2026, 12, 2, 1, 0, tzinfo=UTC)
    assert parse_time_bound("90s", now) == datetime(2026, 12, 2, 0, 58, 30, tzinfo=UTC)
    assert parse_time_bound("7d", now) == datetime(2026, 11, 25, 1, 0, tzinfo=UTC)
    assert parse_time_bound("2026-12-01", now) == datetime(2026, 12, 1, tzinfo=UTC)
    assert parse_time_bound("2026-12-01T11:00:00+01:00", now) == datetime(2026, 12, 1, 10, tzinfo=UTC)
    for bad in ("yesterday", "2h ago", "-2h", "10:00", "2026-13-01", "", "1w", "99999999d"):
        with pytest.raises(ValueError):
            parse_time_bound(bad, now)


def test_fixture_segments(tmp_path):
    """The recorded SDK calls: --duckdb and --out give the same report, one call per ai.request."""
    db, jsonl = tmp_path / "sdk.duckdb", tmp_path / "sdk.jsonl"
    analyze = [str(BIN / "oisp-analyze"), str(FIXTURES / "segments" / "sdk"), *GOLDEN_KEY_ARGS]
    p = subprocess.run([*analyze, "--duckdb", str(db), "--out", str(jsonl)], capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr
    requests = sum(json.loads(line)["event_type"] == "ai.request" for line in jsonl.read_text().splitlines())
    assert requests == 6
    for by in ("namespace,workload,service_account", "provider,model"):
        a, b = report_json(db, "--by", by), report_json(jsonl, "--by", by)
        a.pop("source"), b.pop("source")
        assert a == b
        assert a["total"]["calls"] == requests
        assert not math.isnan(a["total"]["p95_latency_ms"])


def bad_sources(tmp: Path) -> dict[str, tuple[Path, str]]:
    """Inputs report cannot use, and what its one line says."""
    out = {}
    out["missing"] = (tmp / "nope.duckdb", "No such file or directory")
    out["directory"] = (tmp, "Is a directory")
    segment = next((FIXTURES / "segments" / "sdk").glob("*.parquet"))
    out["segment"] = (segment, "neither a DuckDB database nor OISP events as JSON lines (line 1 is not JSON)")
    broken = tmp / "broken.jsonl"
    broken.write_text("".join(json.dumps(ev) + "\n" for ev in EVENTS[:2]) + '{"event_id": "x", \n')
    out["malformed line"] = (broken, "line 3 is not JSON")
    not_event = tmp / "not_event.jsonl"
    not_event.write_text(json.dumps(EVENTS[0]) + "\n\n" + json.dumps({"hello": "world"}) + "\n")
    out["not an event"] = (not_event, "line 3 is not an OISP event")
    listed = tmp / "list.jsonl"
    listed.write_text("[1, 2]\n")
    out["a list"] = (listed, "line 1 is not an OISP event")
    no_calls = tmp / "no_calls.duckdb"
    con = duckdb.connect(str(no_calls))
    con.execute("CREATE TABLE connections (conn_id VARCHAR)")
    con.close()
    out["no ai_calls"] = (no_calls, "no ai_calls table")
    old = tmp / "old.duckdb"
    con = duckdb.connect(str(old))
    con.execute("CREATE TABLE ai_calls (request_id VARCHAR, request_ts VARCHAR, pod_namespace VARCHAR)")
    con.close()
    out["old ai_calls"] = (old, "its ai_calls table lacks")
    corrupt = tmp / "corrupt.duckdb"
    corrupt.write_bytes(b"\0" * 8 + b"DUCK" + b"\x07" * 5000)
    out["corrupt"] = (corrupt, "cannot open as DuckDB")
    return out


def test_bad_sources(tmp_path):
    for name, (path, says) in bad_sources(tmp_path).items():
        p = run(path)
        assert p.returncode == 2, (name, p.stdout, p.stderr)
        assert p.stdout == "" and "Traceback" not in p.stderr, name
        lines = p.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"oisp-analyze report: {path}: "), (name, p.stderr)
        assert says in lines[0], (name, lines[0])


@pytest.mark.parametrize("args, says", [
    (["--since", "yesterday"], "Invalid value for '--since': 'yesterday' is not an ISO 8601 date"),
    (["--until", "2026-12-01T25:00"], "Invalid value for '--until'"),
    (["--since", "5 minutes"], "or a duration back from now (90s, 30m, 2h, 7d)"),
    (["--by", "team"], "among namespace, workload, service_account, node, provider, model"),
    (["--by", "model,model"], "expected distinct keys"),
    (["--by", ""], "expected distinct keys"),
    (["--format", "csv"], "Invalid value for '--format'"),
    (["--since", "2026-12-02", "--until", "2026-12-01"], "--since (2026-12-02T00:00:00Z) must be before"),
    ([], "Missing argument 'SOURCE'"),
])
def test_bad_options(sources, args, says):
    p = run(*([] if not args else [sources[1]]), *args)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    errors = [line for line in p.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and says in errors[0], p.stderr


def test_empty_events_file(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    p = run(empty)
    assert (p.returncode, p.stdout) == (0, f"no AI calls in {empty}\n")
