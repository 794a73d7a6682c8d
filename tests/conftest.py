"""Shared fixtures: a real recorder process, real TLS peers, and segment readers.

eBPF tests need root, bcc and kernel headers. Where those are missing they skip locally, but under
CI=true they fail: CI runs as root on a machine where uprobes work, so a skip there would hide
exactly the failures that matter.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
sys.path.insert(0, str(REPO))

# The analyzer keeps a generated hash key in the user's state directory when it writes only to stdout:
# the tests' own, never the user's.
os.environ["XDG_STATE_HOME"] = tempfile.mkdtemp(prefix="oisp-test-state-")
# The golden files were made with this key (tests/fixtures/hash.key): runs compared with them pass
# GOLDEN_KEY_ARGS, any other run makes its own key beside its output.
HASH_KEY = REPO / "tests" / "fixtures" / "hash.key"
_golden_config = Path(os.environ["XDG_STATE_HOME"]) / "golden-key.yaml"
_golden_config.write_text(f"analyzer:\n  hash_key_file: {json.dumps(str(HASH_KEY))}\n")
GOLDEN_KEY_ARGS = ["--config", str(_golden_config)]

from testbed.pki import make_pki  # noqa: E402


def ebpf_unavailable_reason() -> str | None:
    if os.geteuid() != 0:
        return "not root"
    try:
        import bcc  # noqa: F401
    except ImportError as exc:
        return f"bcc not importable: {exc}"
    release = os.uname().release
    if not Path(f"/lib/modules/{release}/build").exists() and not os.environ.get("BCC_KERNEL_SOURCE"):
        return "no kernel headers"
    if not Path("/sys/bus/event_source/devices/uprobe").exists():
        return "no uprobe support"
    return None


def pytest_collection_modifyitems(config, items):
    reason = ebpf_unavailable_reason()
    if reason is None or os.environ.get("CI") == "true":
        return  # in CI, _fail_ebpf_in_ci turns an unavailable eBPF into a failure
    for item in items:
        if "ebpf" in item.keywords:
            item.add_marker(pytest.mark.skip(reason=f"eBPF unavailable: {reason}"))


@pytest.fixture(autouse=True)
def _fail_ebpf_in_ci(request):
    if "ebpf" in request.keywords and os.environ.get("CI") == "true":
        reason = ebpf_unavailable_reason()
        if reason:
            pytest.fail(f"eBPF test cannot run in CI: {reason}", pytrace=False)


@dataclass
class Recorder:
    proc: subprocess.Popen
    segments_dir: Path
    log_path: Path
    ready: dict

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout)

    @property
    def log(self) -> str:
        return self.log_path.read_text()

    def final_totals(self) -> dict:
        for line in reversed(self.log.splitlines()):
            if "final totals " in line:
                return json.loads(line.split("final totals ", 1)[1])
        raise AssertionError(f"no final totals in recorder log:\n{self.log}")


def start_recorder(tmp_path: Path, config: dict | None = None, args: list[str] = (),
                   timeout: float = 120) -> Recorder:
    """Start oisp-record and wait for its ready file (created once every probe is attached)."""
    segments = tmp_path / "segments"
    ready_file = tmp_path / "ready.json"
    log_path = tmp_path / "recorder.log"
    cmd = [str(BIN / "oisp-record"), "--segments-dir", str(segments), "--ready-file", str(ready_file)]
    if config is not None:
        cfg_path = tmp_path / "recorder.yaml"
        cfg_path.write_text(yaml.safe_dump({"recorder": config}))
        cmd += ["--config", str(cfg_path)]
    cmd += list(args)
    log = open(log_path, "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    while not ready_file.exists():
        if proc.poll() is not None:
            raise AssertionError(f"recorder exited with {proc.returncode}:\n{log_path.read_text()}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"recorder not ready after {timeout} s:\n{log_path.read_text()}")
        time.sleep(0.05)  # polling a readiness signal, not sleeping in its place
    return Recorder(proc, segments, log_path, json.loads(ready_file.read_text()))


@pytest.fixture
def recorder_factory(tmp_path):
    started: list[Recorder] = []

    def factory(config: dict | None = None, args: list[str] = ()) -> Recorder:
        rec = start_recorder(tmp_path, config, args)
        started.append(rec)
        return rec

    yield factory
    for rec in started:
        if rec.proc.poll() is None:
            rec.proc.kill()
            rec.proc.wait()


@pytest.fixture
def pki(tmp_path):
    return make_pki(tmp_path / "pki")


def read_segments(directory: Path) -> pa.Table:
    """All rows of the segments in a directory, with ts_wall as integer nanoseconds (so that
    to_pylist works without pandas)."""
    files = sorted(directory.glob("*.parquet"))
    assert files, f"no segments in {directory}"
    table = pa.concat_tables(pq.read_table(f) for f in files)
    for name in ("ts_wall", "process_start"):
        if name in table.schema.names:
            i = table.schema.get_field_index(name)
            table = table.set_column(i, name, table[name].cast(pa.int64()))
    return table


def stream_bytes(table: pa.Table, conn_id: str, direction: str) -> bytes:
    """One connection-direction's captured bytes in stream order; asserts there is no hole."""
    rows = [r for r in table.to_pylist()
            if r["conn_id"] == conn_id and r["direction"] == direction and r["kind"] == "data"]
    rows.sort(key=lambda r: r["stream_offset"])
    out = bytearray()
    for r in rows:
        assert r["stream_offset"] == len(out), f"hole before offset {r['stream_offset']}"
        out += r["data"]
    return bytes(out)


def connections_of(table: pa.Table, pid: int) -> list[str]:
    ids = []
    for r in table.to_pylist():
        if r["pid"] == pid and r["conn_id"] is not None and r["conn_id"] not in ids:
            ids.append(r["conn_id"])
    return ids
