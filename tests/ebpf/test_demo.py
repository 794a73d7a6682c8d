"""`make run`'s script: records real AI clients where eBPF works, replays the samples where not, and
prints a usage summary either way."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from conftest import BIN, REPO


def run_demo(tmp_path, **env) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", "scripts/demo.sh"], cwd=REPO, capture_output=True, text=True, timeout=600,
        env={**os.environ, "OUT": str(tmp_path / "demo"), **env},
    )


def summary_rows(stdout: str) -> dict[tuple[str, str], list[str]]:
    """(provider, model) -> the other cells of the usage table."""
    lines = stdout.split("== AI usage\n", 1)[1].split("\n\n", 1)[0].splitlines()[2:]
    return {(cells[0], cells[1]): cells[2:] for cells in (line.split() for line in lines)}


def check_summary(out: subprocess.CompletedProcess, demo_dir) -> None:
    rows = summary_rows(out.stdout)
    assert rows[("openai", "gpt-4o-mini")][0] == "21"  # calls: sync, streams, async, HTTP/2, curl, node
    assert rows[("anthropic", "claude-haiku-4-5")][:3] == ["1", "131", "16"]  # calls, tokens in, out
    assert rows[("openai", "rate-limited")][3] == "1"  # one error
    assert ("openai_compatible", "llama-3-long") in rows and ("google", "gemini-2.5-flash") in rows
    assert "who called:" in out.stdout and " curl " in out.stdout and " node " in out.stdout
    events = [json.loads(line) for line in (demo_dir / "events.jsonl").read_text().splitlines()]
    assert len(events) == 62 and (demo_dir / "audit.duckdb").exists()


def test_replays_samples_where_ebpf_cannot_load(tmp_path):
    out = run_demo(tmp_path, BCC_KERNEL_SOURCE=str(tmp_path / "no-headers"))
    assert out.returncode == 0, out.stderr
    first = out.stdout.splitlines()[0]
    assert first.startswith("eBPF is not available here (BCC_KERNEL_SOURCE=")
    assert "replaying samples/segments" in first
    check_summary(out, tmp_path / "demo")


@pytest.mark.ebpf
def test_records_real_ai_clients(tmp_path):
    out = run_demo(tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "== recording real AI clients" in out.stdout
    assert '"dropped_bytes": 0' in out.stdout
    check_summary(out, tmp_path / "demo")


def test_analyzer_summary_of_samples_is_deterministic():
    runs = [
        subprocess.run([str(BIN / "oisp-analyze"), "samples/segments"], cwd=REPO, capture_output=True,
                       text=True, check=True).stdout
        for _ in range(2)
    ]
    assert runs[0] == runs[1]
    assert runs[0].startswith("1 segment file(s), 18 connection(s)")
    assert "missing 0 B" in runs[0]


def test_analyzer_usage_errors():
    out = subprocess.run([str(BIN / "oisp-analyze"), "/nonexistent/path"], capture_output=True, text=True)
    assert out.returncode == 2 and "no such file or directory" in out.stderr
