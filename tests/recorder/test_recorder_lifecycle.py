"""Stopping the recorder mid-workload, and the errors a user sees for bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading

import pyarrow.parquet as pq
import pytest

from conftest import BIN, REPO, start_recorder
from contract import segment_format as sf
from testbed.https_server import HttpsServer
from testbed.ssl_client import payload


@pytest.mark.ebpf
def test_sigterm_mid_workload_leaves_only_complete_segments(tmp_path, pki):
    rec = start_recorder(tmp_path, config={"segment_max_seconds": 0.3, "flush_interval_seconds": 0.1})
    server = HttpsServer(pki.server_context(), body_for=lambda p, b: payload(3000, len(b)))
    stop = threading.Event()
    first_segment = threading.Event()

    def workload():
        while not stop.is_set():
            subprocess.run(
                [sys.executable, "-m", "testbed.ssl_client", str(server.port), str(pki.ca_file),
                 *["2000"] * 20],
                cwd=REPO, capture_output=True, timeout=60,
            )
            if len(list(rec.segments_dir.glob("*.parquet"))) >= 2:
                first_segment.set()

    t = threading.Thread(target=workload)
    t.start()
    try:
        assert first_segment.wait(timeout=120), "the recorder never rotated a segment"
        code = rec.stop(signal.SIGTERM)  # the workload is still running
    finally:
        stop.set()
        t.join()
        server.close()
    assert code == 0, rec.log
    leftovers = [p.name for p in rec.segments_dir.iterdir() if not p.name.endswith(".parquet")]
    assert leftovers == []
    files = sorted(rec.segments_dir.glob("*.parquet"))
    assert len(files) >= 3
    rows = 0
    for f in files:
        assert oct(f.stat().st_mode & 0o777) == "0o600"
        meta = pq.read_metadata(f)
        assert meta.metadata[b"oisp.segment.version"] == sf.FORMAT_VERSION.encode()
        stats = json.loads(meta.metadata[b"oisp.segment.stats"])
        assert "dropped_bytes" in stats
        rows += pq.read_table(f).num_rows
    assert oct(rec.segments_dir.stat().st_mode & 0o777) == "0o700"
    assert rows == rec.final_totals()["rows_written"]


def run_cli(*args: str, user: str | None = None, **kw) -> subprocess.CompletedProcess:
    cmd = [str(BIN / "oisp-record"), *args]
    if user:
        cmd = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, **kw)


@pytest.mark.parametrize(
    "content, message",
    [
        ("recorder: [unclosed", "not valid YAML"),
        ("recorder:\n  segment_max_bytes: lots\n", "segment_max_bytes' must be a positive integer"),
        ("recorder:\n  segmnet_max_bytes: 5\n", "unknown key 'recorder.segmnet_max_bytes'"),
        ("recoder:\n  pids: [1]\n", "unknown top-level key(s): recoder"),
        ("recorder:\n  chunk_size: 1000\n", "chunk_size must be a power of two"),
        ("- just\n- a list\n", "must be a mapping"),
    ],
)
def test_malformed_config_is_a_usage_error(tmp_path, content, message):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(content)
    out = run_cli("--segments-dir", str(tmp_path / "s"), "--config", str(cfg))
    assert out.returncode == 2
    assert message in out.stderr
    assert "Traceback" not in out.stderr


def test_missing_segments_dir_option_is_a_usage_error():
    out = run_cli()
    assert out.returncode == 2
    assert "no segments directory" in out.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root")
def test_help_needs_no_privileges():
    out = run_cli("--help", user="65534")
    assert out.returncode == 0
    assert "--ready-file" in out.stdout


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root")
def test_unprivileged_user_gets_a_clear_error(tmp_path):
    os.chmod(tmp_path, 0o777)
    out = run_cli("--segments-dir", str(tmp_path / "s"), user="65534")
    assert out.returncode == 1
    assert "without the capabilities to load eBPF programs" in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.ebpf
def test_unwritable_segments_dir_is_a_runtime_error(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    out = run_cli("--segments-dir", str(blocker / "segments"))
    assert out.returncode == 1
    assert "is not writable" in out.stderr
    assert "Traceback" not in out.stderr
