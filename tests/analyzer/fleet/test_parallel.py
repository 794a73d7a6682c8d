"""`oisp-analyze --workers N`: the same bytes as one process, whatever N, on the recorded fixtures and on
a generated multi-node corpus (tests/helpers/fleet_corpus.py); a worker that dies fails the run clearly."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import duckdb
import psutil
import pytest

import analyzer.parallel.run as parallel_run
from analyzer.parallel.partition import open_regular, plaintext_groups
from conftest import BIN, GOLDEN_KEY_ARGS
from helpers.analyzer_inputs import FIXTURES
from helpers.fleet_corpus import write_corpus

TABLES = ("events", "ai_calls", "exchanges", "connections", "processes")


def analyze(inputs, out_dir, workers: int | None, *extra, env=None) -> subprocess.CompletedProcess:
    out_dir.mkdir(parents=True, exist_ok=True)
    args = [str(BIN / "oisp-analyze"), *map(str, inputs), *GOLDEN_KEY_ARGS,
            "--out", str(out_dir / "events.jsonl"), "--exchanges", str(out_dir / "exchanges.jsonl"),
            "--duckdb", str(out_dir / "tables.duckdb"), *extra]
    if workers is not None:
        args += ["--workers", str(workers)]
    return subprocess.run(args, capture_output=True, text=True, timeout=120, env=env)


def tables(path) -> dict[str, list[tuple]]:
    """Every table of the database, its rows in order (a run without AI calls has no events table)."""
    with duckdb.connect(str(path), read_only=True) as con:
        names = [r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()]
        assert set(names) <= set(TABLES)
        return {t: con.execute(f"SELECT * FROM {t}").fetchall() for t in sorted(names)}


def assert_same(one, many) -> None:
    """Byte-identical JSON lines, the same DuckDB tables row for row, the same summary."""
    for name in ("events.jsonl", "exchanges.jsonl"):
        assert (many / name).read_bytes() == (one / name).read_bytes(), name
    assert tables(many / "tables.duckdb") == tables(one / "tables.duckdb")


def run_all(inputs, base, counts=(1, 2, 3)) -> dict[int, subprocess.CompletedProcess]:
    results = {n: analyze(inputs, base / f"w{n}", n) for n in counts}
    for n, r in results.items():
        assert r.returncode == 0, (n, r.stderr)
        assert r.stderr == results[counts[0]].stderr  # the summary line (and skipped files) too
    for n in counts[1:]:
        assert_same(base / f"w{counts[0]}", base / f"w{n}")
    return results


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    files = write_corpus(root)
    return root, files


@pytest.mark.parametrize("name", ["h1", "h2", "h1_v1", "sdk", "sdk_more"])
def test_each_recorded_fixture(name, tmp_path):
    run_all([FIXTURES / "segments" / name], tmp_path, counts=(1, 2))
    golden = FIXTURES / "golden" / f"{name}.exchanges.jsonl"
    assert (tmp_path / "w2" / "exchanges.jsonl").read_bytes() == golden.read_bytes()
    golden_events = FIXTURES / "golden" / f"{name}.events.jsonl"
    if golden_events.exists():
        assert (tmp_path / "w2" / "events.jsonl").read_bytes() == golden_events.read_bytes()


def test_all_recorded_fixtures_in_one_run(tmp_path):
    results = run_all([FIXTURES / "segments"], tmp_path)
    assert "5 of 5 segment file(s)" in results[3].stderr
    assert (tmp_path / "w1" / "events.jsonl").stat().st_size > 0


def test_generated_multi_node_corpus(corpus, tmp_path):
    root, files = corpus
    results = run_all([root], tmp_path)
    summary = results[1].stderr.strip().splitlines()[-1]
    assert f"{len(files)} of {len(files)} segment file(s)" in summary and "rows dropped" in results[1].stderr
    with duckdb.connect(str(tmp_path / "w1" / "tables.duckdb"), read_only=True) as con:
        nodes = {r[0] for r in con.execute("SELECT DISTINCT node FROM connections").fetchall()}
        versions = {r[0] for r in con.execute("SELECT DISTINCT http_version FROM exchanges").fetchall()}
        closed = {r[0] for r in con.execute("SELECT DISTINCT closed FROM connections").fetchall()}
        # connections that span files
        spans = con.execute(f"""SELECT count(*) FROM (SELECT node, conn_id
                                FROM read_parquet({[str(f) for f in files]}, filename=true)
                                WHERE conn_id IS NOT NULL GROUP BY ALL HAVING count(DISTINCT filename) > 1)
                             """).fetchall()[0][0]
    assert nodes == {"node-a", "node-b", "node-c"}
    assert versions >= {"1.1", "2"}
    assert closed == {True, False}  # some closed by a row, some by the end of the input
    assert spans >= 10


def test_corpus_needs_plaintext_pairs_kept_together(corpus, tmp_path, monkeypatch):
    """The corpus has plaintext ends that pair across connections: split by connection alone, the
    partitions would report other calls (so the tests above do test the grouping)."""
    root, files = corpus
    groups = plaintext_groups(open_regular(f) for f in files)
    assert len(groups) >= 4
    from analyzer.cli import analyze_command

    monkeypatch.setattr(parallel_run, "plaintext_groups", lambda _files: {})
    outputs = {}
    for n in (1, 2, 3):
        out = tmp_path / f"events-{n}.jsonl"
        with pytest.raises(SystemExit) as exit_:
            analyze_command([str(root), *GOLDEN_KEY_ARGS, "--out", str(out), "--workers", str(n)])
        assert exit_.value.code == 0
        outputs[n] = out.read_bytes()
    assert outputs[2] != outputs[1] or outputs[3] != outputs[1]


def test_follow_refuses_workers(tmp_path):
    r = subprocess.run([str(BIN / "oisp-analyze"), str(tmp_path), "--follow", "--out",
                        str(tmp_path / "e.jsonl"), "--workers", "2"], capture_output=True, text=True)
    assert r.returncode == 2 and "--follow runs in one process: not --workers" in r.stderr


def test_workers_must_be_positive(tmp_path):
    r = analyze([FIXTURES / "segments" / "h1"], tmp_path, 0)
    assert r.returncode == 2 and "--workers" in r.stderr


def test_default_is_one_worker_for_small_input_and_cores_for_large(corpus, monkeypatch):
    root, files = corpus
    monkeypatch.setattr(parallel_run, "available_cores", lambda: 4)
    assert parallel_run.default_workers(files) == 1
    monkeypatch.setattr(parallel_run, "ROWS_PER_WORKER", 1000)
    assert parallel_run.default_workers(files) == 4  # 5,700 rows: capped by the cores
    monkeypatch.setattr(parallel_run, "ROWS_PER_WORKER", 2000)
    assert parallel_run.default_workers(files) == 2


def _worker_pids(parent: psutil.Process) -> list[int]:
    return [p.pid for p in parent.children() if "resource_tracker" not in " ".join(p.cmdline())]


def test_a_killed_worker_fails_the_run_clearly(tmp_path):
    """A worker killed mid-run: exit 1 with a one-line error naming it, and no output written."""
    root = tmp_path / "segments"
    write_corpus(root, copies=12, hostile=0)
    work = tmp_path / "tmp"
    work.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    args = [str(BIN / "oisp-analyze"), str(root), *GOLDEN_KEY_ARGS, "--out", str(out / "events.jsonl"),
            "--workers", "2"]
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, text=True, env={**os.environ, "TMPDIR": str(work)})
    try:
        # a worker's record file appears when it starts analyzing: it is running then
        deadline = time.monotonic() + 60
        while not list(work.glob("oisp-analyze-*/part-0001.arrows")):
            assert proc.poll() is None and time.monotonic() < deadline, "no worker started"
            time.sleep(0.01)
        victims = _worker_pids(psutil.Process(proc.pid))
        assert len(victims) == 2
        os.kill(victims[1], signal.SIGKILL)
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 1
    assert stderr.strip().splitlines()[-1].startswith("oisp-analyze: worker ")
    assert "died (killed, or out of memory)" in stderr
    assert (out / "events.jsonl").read_bytes() == b""  # nothing partial
    assert not list(work.iterdir())  # its temporary files are gone


def test_otlp_export_from_a_parallel_run(tmp_path):
    """The exporter gets the same calls, span for span, when the workers made the events."""
    from helpers.otlp_receiver import Receiver

    spans = {}
    for n in (1, 2):
        with Receiver("grpc") as rx:
            r = analyze([FIXTURES / "segments"], tmp_path / f"w{n}", n, "--otlp", f"http://127.0.0.1:{rx.port}")
            assert r.returncode == 0, r.stderr
            spans[n] = sorted(s.SerializeToString(deterministic=True) for req in rx.requests["traces"]
                              for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans)
    assert len(spans[1]) == 16 and spans[2] == spans[1]


def test_progress_on_a_terminal(corpus, tmp_path):
    """With stderr on a terminal, --workers shows a bar of every worker's reading of every file, and
    writes what it writes without one."""
    import pty

    root, files = corpus
    master, slave = pty.openpty()
    out = tmp_path / "tty"
    out.mkdir()
    args = [str(BIN / "oisp-analyze"), str(root), *GOLDEN_KEY_ARGS, "--out", str(out / "events.jsonl"),
            "--workers", "2"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=slave)
    os.close(slave)
    shown = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: the program ended and the terminal closed
            break
        if not chunk:
            break
        shown += chunk
    os.close(master)
    assert proc.wait(timeout=120) == 0
    text = shown.decode(errors="replace")
    total = 2 * len(files)
    assert "segments x 2 workers" in text and f"{total}/{total}" in text, text[-2000:]
    plain = analyze([root], tmp_path / "plain", 2)
    assert plain.returncode == 0 and "workers" not in plain.stderr
    assert (out / "events.jsonl").read_bytes() == (tmp_path / "plain" / "events.jsonl").read_bytes()


def test_progress_ends_when_a_worker_fails():
    """A worker that failed before counting all its files does not leave the bar waiting for them."""
    import queue
    from concurrent.futures import Future

    ok, failed = Future(), Future()
    ok.set_result(None)
    failed.set_exception(RuntimeError("worker failed"))
    done = queue.Queue()
    done.put(1)
    seen: list[int] = []
    parallel_run._follow([ok, failed], done, seen.append, total=4)
    assert seen == [1]
