"""`make run`'s script: records a real workload where eBPF works, replays the samples where not."""

from __future__ import annotations

import os
import subprocess

import pytest

from conftest import BIN, REPO


def run_demo(tmp_path, **env) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", "scripts/demo.sh"], cwd=REPO, capture_output=True, text=True, timeout=300,
        env={**os.environ, "OUT": str(tmp_path / "demo"), **env},
    )


def test_replays_samples_where_ebpf_cannot_load(tmp_path):
    out = run_demo(tmp_path, BCC_KERNEL_SOURCE=str(tmp_path / "no-headers"))
    assert out.returncode == 0, out.stderr
    first = out.stdout.splitlines()[0]
    assert first.startswith("eBPF is not available here (BCC_KERNEL_SOURCE=")
    assert "replaying samples/segments" in first
    assert "4 connection(s)" in out.stdout
    assert "curl" in out.stdout
    # the exchanges of the sample: three requests, each seen from the client and the server end
    assert "curl (client, HTTP/1.1) GET /health -> 200" in out.stdout
    assert out.stdout.count("POST /v1/chat/completions -> 200") == 4


@pytest.mark.ebpf
def test_records_a_real_workload(tmp_path):
    out = run_demo(tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "== recording" in out.stdout
    assert '"dropped_bytes": 0' in out.stdout
    # the workload's three requests, both ends each, plus curl's own connection
    assert "4 connection(s)" in out.stdout, out.stdout
    assert "GET /health HTTP/1.1" in out.stdout
    assert "curl (client, HTTP/1.1) GET /health -> 200" in out.stdout
    assert "request 300000 B" in out.stdout
    assert list((tmp_path / "demo" / "segments").glob("*.parquet"))


def test_analyzer_summary_of_samples_is_deterministic():
    runs = [
        subprocess.run([str(BIN / "oisp-analyze"), "samples/segments"], cwd=REPO, capture_output=True,
                       text=True, check=True).stdout
        for _ in range(2)
    ]
    assert runs[0] == runs[1]
    assert runs[0].startswith("1 segment file(s), 4 connection(s)")
    assert "sent 300364 B" in runs[0] and "missing 0 B" in runs[0]


def test_analyzer_usage_errors():
    out = subprocess.run([str(BIN / "oisp-analyze"), "/nonexistent/path"], capture_output=True, text=True)
    assert out.returncode == 2 and "no such file or directory" in out.stderr


def test_analyzer_reports_a_corrupt_segment_without_traceback(tmp_path):
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"PAR1 this is not parquet")
    out = subprocess.run([str(BIN / "oisp-analyze"), str(bad)], capture_output=True, text=True)
    assert out.returncode == 1
    assert "cannot read segments" in out.stderr and "Traceback" not in out.stderr
