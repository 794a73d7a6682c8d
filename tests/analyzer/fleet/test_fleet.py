"""`oisp-analyze fleet`: on real Dask LocalCluster workers, from local paths and from a real S3 protocol
server (moto's server mode) to the same, the outputs equal one `oisp-analyze` process's on the same
segments (tests/helpers/fleet_corpus.py); a worker killed mid-run changes nothing; tasks that always
fail, and bad input, give one clear error and no manifest."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import boto3
import dask
import duckdb
import pytest
import s3fs
from distributed import Client, LocalCluster
from moto.server import ThreadedMotoServer

from conftest import BIN, GOLDEN_KEY_ARGS
from helpers.dask_plugins import KillAlways, KillOnce
from helpers.fleet_corpus import write_corpus

NODE_TABLES = ("exchanges", "connections", "processes", "ai_calls")
PARQUET_TYPES = {"HUGEINT": "DECIMAL(38,0)"}
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "fleet-test", "AWS_SECRET_ACCESS_KEY": "fleet-test",
               "AWS_DEFAULT_REGION": "us-east-1"}


def fleet(*args, env=None, timeout=180) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "oisp-analyze"), "fleet", *map(str, args), *GOLDEN_KEY_ARGS],
                          capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})})


def summary_numbers(line: str) -> list[str]:
    """The counts of a summary line, whichever command wrote it."""
    return [w for w in line.replace("(", " ").split() if w.isdigit()][:7]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Segments of three nodes as shipped to a bucket (node=NODE/date=DAY/NAME.parquet), and one
    oisp-analyze process's outputs of them."""
    base = tmp_path_factory.mktemp("fleet")
    root = base / "segments"
    write_corpus(root, layout="shipped")
    ref = base / "reference"
    ref.mkdir()
    r = subprocess.run([str(BIN / "oisp-analyze"), str(root), *GOLDEN_KEY_ARGS, "--workers", "1",
                        "--out", str(ref / "events.jsonl"), "--duckdb", str(ref / "tables.duckdb")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return root, ref, r.stderr.strip().splitlines()[-1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3(corpus):
    """A real S3 protocol server with a bucket holding the corpus under segments/."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=_free_port(), verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{server._port}"
    saved = {k: os.environ.get(k) for k in CREDENTIALS}
    os.environ.update(CREDENTIALS)
    try:
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="fleet")
        fs = s3fs.S3FileSystem(endpoint_url=endpoint, skip_instance_cache=True)
        fs.put(str(corpus[0]), "fleet/segments", recursive=True)
        yield endpoint, fs
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextmanager
def local_cluster(**config) -> Iterator[tuple[LocalCluster, Client]]:
    """A cluster of 2 worker processes; their profiler off (analyzer/fleet/tasks.py PROFILER_ON) unless
    the config turns it on. The config holds for the cluster's life: a nanny hands it to each worker it
    starts, restarts included."""
    with dask.config.set({"distributed.worker.profile.enabled": False, **config}), \
            LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as c, \
            Client(c, set_as_default=False) as client:
        yield c, client


def assert_equals_reference(out: Path, ref: Path, summary: str, stderr: str) -> None:
    """The fleet's files under `out` hold what the one process wrote, split by day and node, in the same
    order and with the same column types; the manifest, written last, lists them and the same counts."""
    manifest = json.loads((out / "_SUCCESS.json").read_text())
    listed = {f["path"]: f["bytes"] for f in manifest["files"]}
    present = {str(p.relative_to(out)): p.stat().st_size for p in out.rglob("*")
               if p.is_file() and p.name != "_SUCCESS.json"}
    assert listed == present
    assert summary_numbers(stderr.strip().splitlines()[-1]) == summary_numbers(summary)
    counts = ("files_read", "segment_files", "rows", "connections", "exchanges", "incomplete", "events")
    assert [manifest[k] for k in counts] == [int(n) for n in summary_numbers(summary)]
    # events: JSON lines byte for byte, Parquet rows as the DuckDB events table's
    expected: dict[str, list[str]] = {}
    for line in (ref / "events.jsonl").read_text().splitlines(keepends=True):
        ev = json.loads(line)
        expected.setdefault(f"date={ev['ts'][:10]}/node={ev['host']['hostname']}", []).append(line)
    got = {str(p.parent.relative_to(out / "events")): p.read_text().splitlines(keepends=True)
           for p in (out / "events").glob("date=*/node=*/events.jsonl")}
    assert got == expected and sum(map(len, got.values())) == manifest["events"] > 0
    with duckdb.connect(str(ref / "tables.duckdb"), read_only=True) as con:
        for table in ("events", *NODE_TABLES):
            # Parquet has no 128-bit integer: the sums of processes are exact decimals there
            described = con.execute(f"DESCRIBE {table}").fetchall()
            want_types = [(c[0], PARQUET_TYPES.get(c[1], c[1])) for c in described]
            columns = [c[0] for c in want_types]
            rows = con.execute(f"SELECT * FROM {table}").fetchall()
            want: dict[str, list] = {}
            for r in rows:
                part = f"node={r[columns.index('node')]}"
                if table == "events":
                    part = f"date={r[columns.index('ts')][:10]}/{part}"
                want.setdefault(part, []).append(r)
            for where in (["events", "tables/events"] if table == "events" else [f"tables/{table}"]):
                files = sorted((out / where).glob("**/*.parquet"))
                have = {str(f.parent.relative_to(out / where)):
                        duckdb.sql(f"SELECT * FROM read_parquet('{f}', hive_partitioning=false)").fetchall()
                        for f in files}
                assert have == want, (where, table)
                for f in files:
                    types = duckdb.sql(f"DESCRIBE SELECT * FROM read_parquet('{f}', hive_partitioning=false)")
                    assert [t[:2] for t in types.fetchall()] == [t[:2] for t in want_types], (f, table)
    assert not (out / "_work").exists()  # the scratch files are gone


def test_local_paths_on_its_own_local_cluster(corpus, tmp_path):
    root, ref, summary = corpus
    out = tmp_path / "out"
    r = fleet(root, "--out", out, "--workers", "2")
    assert r.returncode == 0, r.stderr
    assert_equals_reference(out, ref, summary, r.stderr)
    assert "3 node(s)" in r.stderr


def test_s3_to_s3(corpus, s3, tmp_path):
    """Read from and write to the S3 server, its endpoint from AWS_ENDPOINT_URL (botocore's own variable),
    on a local cluster of 2 workers; more partitions than nodes, so connections are split."""
    root, ref, summary = corpus
    endpoint, fs = s3
    r = fleet("s3://fleet/segments", "--out", "s3://fleet/out", "--workers", "2",
              "--partitions-per-node", "3", env={**CREDENTIALS, "AWS_ENDPOINT_URL": endpoint})
    assert r.returncode == 0, r.stderr
    assert "skipped s3://fleet/segments/node=node-" in r.stderr  # problems name the objects
    fs.invalidate_cache()
    fs.get("fleet/out", str(tmp_path / "out"), recursive=True)
    assert_equals_reference(tmp_path / "out", ref, summary, r.stderr)


def test_a_worker_killed_mid_run_changes_nothing(corpus, tmp_path):
    """One worker process is SIGKILLed as it starts an analysis task; Dask runs the task again on a new
    worker and the output is the same."""
    root, ref, summary = corpus
    marker = tmp_path / "kill-marker"
    marker.write_text("")
    out = tmp_path / "out"
    with local_cluster() as (cluster, client):
        client.register_plugin(KillOnce(str(marker)))
        r = fleet(root, "--out", out, "--scheduler", cluster.scheduler_address, "--partitions-per-node", "2")
    assert r.returncode == 0, r.stderr
    claimed = Path(str(marker) + ".claimed").read_text().split()
    assert claimed[1].startswith("analyze-") and not marker.exists()  # a worker did die mid-analysis
    assert_equals_reference(out, ref, summary, r.stderr)


def test_tasks_that_always_fail_give_one_clear_error_and_no_manifest(corpus, tmp_path):
    root, _, _ = corpus
    out = tmp_path / "out"
    with local_cluster(**{"distributed.scheduler.allowed-failures": 1}) as (cluster, client):
        client.register_plugin(KillAlways())
        r = fleet(root, "--out", out, "--scheduler", cluster.scheduler_address)
    assert r.returncode == 1
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("oisp-analyze fleet: task analyze-") and "workers running it died" in last
    assert not (out / "_SUCCESS.json").exists()
    assert not (out / "_work").exists()


def test_workers_running_the_profiler_are_refused(corpus, tmp_path):
    """A task that fails on every worker (here: the profiler, which can change results, is on): one line
    saying why, and no manifest."""
    out = tmp_path / "out"
    with local_cluster(**{"distributed.worker.profile.enabled": True}) as (cluster, _):
        r = fleet(corpus[0], "--out", out, "--scheduler", cluster.scheduler_address)
    assert r.returncode == 1
    last = r.stderr.strip().splitlines()[-1]
    assert last == ("oisp-analyze fleet: a task failed: RuntimeError: this Dask worker runs the statistical "
                    "profiler, which can change the analysis's results: start the workers with "
                    "DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED=False")
    assert not (out / "_SUCCESS.json").exists() and not (out / "_work").exists()


def test_unreachable_scheduler(corpus, tmp_path):
    out = tmp_path / "out"
    r = fleet(corpus[0], "--out", out, "--scheduler", f"tcp://127.0.0.1:{_free_port()}",
              "--connect-timeout", "1")
    assert r.returncode == 1
    assert r.stderr.strip().splitlines()[-1].startswith("oisp-analyze fleet: cannot reach the Dask scheduler")
    assert not out.exists()


@pytest.mark.parametrize("source, why", [
    ("", "'SOURCE_URL': is empty"),
    ("{tmp}/missing", "no such file or directory: {tmp}/missing"),
    ("{tmp}/empty", "no segment files (*.parquet) under {tmp}/empty"),
])
def test_bad_source(source, why, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("not a segment")
    r = fleet(source.format(tmp=tmp_path), "--out", tmp_path / "out")
    assert r.returncode == 2 and why.format(tmp=tmp_path) in r.stderr
    assert not (tmp_path / "out").exists()


def test_s3_prefix_without_segments(s3, tmp_path):
    endpoint, _ = s3
    r = fleet("s3://fleet/nothing-here", "--out", "s3://fleet/out-none", "--endpoint-url", endpoint,
              env=CREDENTIALS)
    assert r.returncode == 2 and "no such file or directory: s3://fleet/nothing-here" in r.stderr


def test_output_of_an_earlier_run_needs_overwrite(corpus, tmp_path):
    root, ref, summary = corpus
    out = tmp_path / "out"
    (out / "events").mkdir(parents=True)
    (out / "events" / "stale.jsonl").write_text("{}\n")
    r = fleet(root, "--out", out)
    assert r.returncode == 2 and "holds an earlier run's output (events): --overwrite replaces it" in r.stderr
    assert (out / "events" / "stale.jsonl").exists()
    r = fleet(root, "--out", out, "--overwrite", "--workers", "1")
    assert r.returncode == 0, r.stderr
    assert not (out / "events" / "stale.jsonl").exists()
    assert_equals_reference(out, ref, summary, r.stderr)


def test_usage_errors(corpus, tmp_path):
    root = corpus[0]
    r = fleet(root, "--out", root / "out")
    assert r.returncode == 2 and "is inside the input" in r.stderr
    r = fleet(root, "--out", tmp_path / "out", "--workers", "2", "--scheduler", "tcp://127.0.0.1:1")
    assert r.returncode == 2 and "--workers sizes the local cluster: not with --scheduler" in r.stderr
    r = fleet(root)
    assert r.returncode == 2 and "--out" in r.stderr
