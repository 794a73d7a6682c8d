"""Output files hold prompts and answers: created 0600, never written through a link nor into
another user's file; every misuse of the output options is a one-line error (exit 2 for usage,
1 at run time), never a traceback."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from analyzer.sinks.duckdb_tables import DuckDBSink
from analyzer.sinks.events_jsonl import RotatingOutput
from analyzer.sinks.sink import OutputFileError, open_output
from conftest import BIN
from helpers.analyzer_inputs import FIXTURES

H1 = FIXTURES / "segments" / "h1"
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another uid needs root")


def analyze(*args, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "oisp-analyze"), str(H1), *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, timeout=120, umask=0o022)


def assert_clean_error(result: subprocess.CompletedProcess, code: int, message: str) -> None:
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr and message in result.stderr
    lines = result.stderr.splitlines()
    assert len([line for line in lines if line.startswith(("Error:", "oisp-analyze:"))]) == 1, result.stderr


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_outputs_are_created_0600_whatever_the_umask(tmp_path):
    old = tmp_path / "events.jsonl"
    old.write_text("an earlier run's events\n")
    old.chmod(0o644)
    result = analyze("--out", old, "--exchanges", "x.jsonl", "--duckdb", "t.duckdb", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for name in ("events.jsonl", "x.jsonl", "t.duckdb"):
        assert mode(tmp_path / name) == 0o600, name
    assert "earlier" not in old.read_text()  # an existing file of ours: truncated


@pytest.mark.parametrize("option", ["--out", "--exchanges", "--duckdb"])
def test_a_link_at_the_output_path_is_refused(tmp_path, option):
    victim = tmp_path / "victim"
    victim.write_text("precious")
    (tmp_path / "out").symlink_to(victim)
    assert_clean_error(analyze(option, "out", cwd=tmp_path), 2, "symbolic link")
    assert victim.read_text() == "precious" and (tmp_path / "out").is_symlink()


@as_root
@pytest.mark.parametrize("option", ["--out", "--exchanges", "--duckdb"])
def test_another_users_file_is_refused(tmp_path, option):
    theirs = tmp_path / "theirs"
    theirs.write_text("theirs")
    os.chown(theirs, 65534, 65534)
    assert_clean_error(analyze(option, theirs, cwd=tmp_path), 2, "owned by uid 65534")
    assert theirs.read_text() == "theirs"


def test_opening_checks_again(tmp_path):
    """What the option checks saw may change before the file is opened: opening refuses alike."""
    victim = tmp_path / "victim"
    victim.write_text("precious")
    (tmp_path / "link").symlink_to(victim)
    for opener in (open_output, lambda p: RotatingOutput(p, 0, 1), DuckDBSink):
        with pytest.raises(OutputFileError, match="link"):
            opener(tmp_path / "link")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    with pytest.raises(OutputFileError, match="symbolic link"):
        open_output(tmp_path / "dangling")
    assert victim.read_text() == "precious" and not (tmp_path / "nowhere").exists()


@as_root
def test_opening_refuses_another_users_file(tmp_path):
    theirs = tmp_path / "theirs"
    theirs.write_text("theirs")
    os.chown(theirs, 65534, 65534)
    for opener in (open_output, lambda p: RotatingOutput(p, 0, 1), DuckDBSink):
        with pytest.raises(OutputFileError, match="uid 65534"):
            opener(theirs)
    assert theirs.read_text() == "theirs"


def test_live_output_is_0600_and_appended(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text("kept\n")
    path.chmod(0o640)
    out = RotatingOutput(path, 0, 1)
    out.write("new")
    out.close()
    assert path.read_text() == "kept\nnew\n" and mode(path) == 0o600


def test_a_stale_duckdb_wal_link_is_refused(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious")
    (tmp_path / "t.duckdb.wal").symlink_to(victim)
    with pytest.raises(OutputFileError, match="t.duckdb.wal"):
        DuckDBSink(tmp_path / "t.duckdb")
    assert victim.read_text() == "precious"


def test_duckdb_wal_is_private(tmp_path):
    """DuckDB creates its write-ahead log itself: under the sink's umask it is 0600 as well."""
    sink = DuckDBSink(tmp_path / "t.duckdb")
    old = os.umask(0o022)
    try:
        sink.rows["exchanges"] = [{"n": i, "text": "a" * 1000} for i in range(100_000)]
        sink._flush("exchanges")
        wal = tmp_path / "t.duckdb.wal"
        assert wal.exists() and mode(wal) == 0o600
    finally:
        os.umask(old)
        sink.close()
    assert mode(tmp_path / "t.duckdb") == 0o600


@pytest.mark.parametrize("args, message", [
    (["--out", "missing/events.jsonl"], "no directory missing"),
    (["--exchanges", "missing/sub/x.jsonl"], "no directory missing/sub"),
    (["--duckdb", "missing/t.duckdb"], "no directory missing"),
    (["--out", "afile/events.jsonl"], "Not a directory"),
    (["--out", "."], "is a directory"),
    (["--duckdb", "adir"], "is a directory"),
    (["--out", "same.jsonl", "--exchanges", "same.jsonl"], "--exchanges and --out both write to same.jsonl"),
    (["--out", "same.jsonl", "--duckdb", "./same.jsonl"], "--out and --duckdb both write to"),
    (["--out", "-", "--exchanges", "-"], "both write to -"),
    (["--duckdb", "-"], "a DuckDB database is a file, not '-'"),
    (["--out", H1 / next(p.name for p in H1.glob("*.parquet"))], "is one of the segment files read"),
])
def test_output_misuse_is_a_usage_error(tmp_path, args, message):
    (tmp_path / "afile").write_text("")
    (tmp_path / "adir").mkdir()
    assert_clean_error(analyze(*args, cwd=tmp_path), 2, message)
    assert not (tmp_path / "same.jsonl").exists()


def test_devices_are_written_not_refused(tmp_path):
    result = analyze("--out", "/dev/null", "--exchanges", "/dev/null", cwd=tmp_path)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("path, message", [
    ("/dev/full", "cannot write the output: [Errno 28]"),  # a full disk, at run time
    ("fifo", "is a FIFO nobody reads"),  # never waited on
    ("/proc/no-such-output.jsonl", "cannot write /proc/no-such-output.jsonl"),  # no file can be made there
])
def test_failing_to_write_is_a_runtime_error(tmp_path, path, message):
    os.mkfifo(tmp_path / "fifo")
    assert_clean_error(analyze("--exchanges", path, cwd=tmp_path), 1, message)
