"""The recorder under exactly the capabilities docs/recorder.md lists (Capabilities), not full root.

Two principals record a real TLS exchange:
- uid 0 with only CAP_BPF, CAP_PERFMON and CAP_SYS_PTRACE: how a Kubernetes DaemonSet runs it
  (runAsUser 0, drop ALL, add these). Kubernetes hands added capabilities to a non-root user only
  through file capabilities, never as ambient ones, so this is the set that matters in production.
  The workload runs from this test process (full root), so its processes hold capabilities the
  recorder lacks: reading their /proc entries needs CAP_SYS_PTRACE, exactly as for a container's.
- uid 65534 with the same set plus CAP_DAC_OVERRIDE, as ambient capabilities: nothing in the
  recorder may rely on being uid 0. A non-root uid needs CAP_DAC_OVERRIDE because tracefs is root's
  (a 0700 directory, uprobe_events 0640), and without CAP_SYS_ADMIN the kernel refuses its uprobe
  PMU, so bcc creates uprobes by writing uprobe_events.

capsh lowers the bounding set too, so that nothing can be regained by exec. Without each required
capability the recorder must stop at once with exit code 1 and name it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import BIN, REPO, read_segments, stream_bytes
from recorder.capture import preflight
from testbed.https_server import HttpsServer
from testbed.ssl_client import payload, read_response

pytestmark = pytest.mark.ebpf

CAPSH = shutil.which("capsh") or "/usr/sbin/capsh"
NOBODY = 65534
ROOT_SET = ("cap_bpf", "cap_perfmon", "cap_sys_ptrace")
NON_ROOT_SET = (*ROOT_SET, "cap_dac_override")
SIZES = [100, 4096, 70000, 0]


@dataclass(frozen=True)
class Principal:
    uid: int
    caps: tuple[str, ...]

    def capsh(self) -> list[str]:
        """A capsh command line that execs its arguments as this principal and nothing more."""
        last = int(Path("/proc/sys/kernel/cap_last_cap").read_text())
        known = subprocess.run([CAPSH, f"--decode={(1 << last + 1) - 1:#x}"], capture_output=True,
                               text=True, check=True).stdout.split("=", 1)[1].strip().split(",")
        iab = [f"!{c}" for c in known if c not in self.caps]
        user: list[str] = []
        if self.uid != 0:
            # keep=1 carries the permitted set across setuid, so the IAB can still raise ambient ones
            user = ["--keep=1", f"--gid={self.uid}", f"--groups={self.uid}", f"--uid={self.uid}"]
            iab += [f"^{c}" for c in self.caps]
        return [CAPSH, *user, f"--iab={','.join(iab)}", "--", "-c", 'exec "$0" "$@"']

    def mask(self) -> int:
        return sum(1 << getattr(preflight, c.upper()) for c in self.caps)


def status_of(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return dict(line.split(":\t", 1) for line in lines if ":\t" in line)


def recorder_dir(tmp_path: Path, uid: int) -> Path:
    """A directory the principal owns, as a DaemonSet's volume would be."""
    d = tmp_path / "rec"
    d.mkdir()
    os.chown(d, uid, uid)
    return d


@pytest.fixture(autouse=True)
def _prerequisites():
    assert Path(CAPSH).exists(), "capsh is missing: apt-get install libcap2-bin"
    # Mounting needs CAP_SYS_ADMIN, which the recorder is denied here: a DaemonSet mounts it too.
    preflight.ensure_tracefs()


@pytest.mark.parametrize("principal", [Principal(0, ROOT_SET), Principal(NOBODY, NON_ROOT_SET)],
                         ids=["uid0", "uid65534"])
def test_minimal_capabilities_capture_exact_bytes(tmp_path, pki, principal):
    work = recorder_dir(tmp_path, principal.uid)
    segments, ready_file, log_path = work / "segments", work / "ready.json", tmp_path / "recorder.log"
    cmd = principal.capsh() + [str(BIN / "oisp-record"), "--segments-dir", str(segments),
                               "--ready-file", str(ready_file), "--duration", "300"]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    server = conn = None
    sent, received = bytearray(), bytearray()
    try:
        deadline = time.monotonic() + 120
        while not ready_file.exists():
            assert proc.poll() is None, f"recorder exited with {proc.returncode}:\n{log_path.read_text()}"
            assert time.monotonic() < deadline, f"recorder not ready:\n{log_path.read_text()}"
            time.sleep(0.05)  # polling the readiness signal, not sleeping in its place
        ready = json.loads(ready_file.read_text())
        # capsh execs in place: this pid is the recorder, holding exactly the set and nothing else
        assert ready["pid"] == proc.pid
        status = status_of(proc.pid)
        for field in ("CapEff", "CapPrm", "CapBnd"):
            assert int(status[field], 16) == principal.mask(), status
        assert status["Uid"].split() == [str(principal.uid)] * 4
        # bcc's uprobe PMU attaches set a garbage ref_ctr_offset, so a tracefs-made probe on the
        # same function fails (EINVAL) while another, fully privileged bcc tool holds one
        assert any({"SSL_write", "SSL_read"} <= set(lib["symbols"]) for lib in ready["libraries"]), (
            f"libssl not probed (another bcc tool running?):\n{log_path.read_text()}")

        # Both ends in this process, which holds capabilities the recorder lacks. The connection
        # stays open until the recorder has stopped, so that its socket is still there to look up
        # (/proc/PID/fd/N) whenever the recorder decodes the socket row.
        server = HttpsServer(pki.server_context(), body_for=lambda path, body: payload(9000, len(body)))
        conn = pki.client_context().wrap_socket(socket.create_connection(("127.0.0.1", server.port)),
                                                server_hostname="localhost")
        client_port = conn.getsockname()[1]
        for i, size in enumerate(SIZES):
            request = b"POST /cap/%d HTTP/1.1\r\nhost: localhost\r\ncontent-length: %d\r\n\r\n" % (i, size)
            request += payload(size, i)
            conn.sendall(request)
            sent += request
            received += read_response(conn)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=60)
        if conn is not None:
            conn.close()
        if server is not None:
            server.close()
    log_text = log_path.read_text()
    assert rc == 0, log_text
    assert "Traceback" not in log_text
    assert "uprobes: " in log_text  # how they were created (uprobe PMU or tracefs) is logged

    table = read_segments(segments)
    rows = table.to_pylist()
    sockets = {r["conn_id"]: r for r in rows if r["kind"] == "socket" and r["pid"] == os.getpid()}
    client = [c for c, r in sockets.items() if r["peer_port"] == server.port]
    accepted = [c for c, r in sockets.items() if r["local_port"] == server.port]
    assert len(client) == 1 and len(accepted) == 1, sockets
    assert stream_bytes(table, client[0], "egress") == bytes(sent)
    assert stream_bytes(table, client[0], "ingress") == bytes(received)
    assert stream_bytes(table, accepted[0], "ingress") == bytes(sent)
    assert stream_bytes(table, accepted[0], "egress") == bytes(received)
    # What CAP_SYS_PTRACE buys: the local end of a socket (readlink /proc/PID/fd/N; for the accepted
    # socket, its peer too) and the program (readlink /proc/PID/exe) of such a process
    sock = sockets[client[0]]
    assert (sock["local_ip"], sock["local_port"]) == ("127.0.0.1", client_port)
    assert sockets[accepted[0]]["peer_port"] == client_port
    proc_row = next(r for r in rows if r["kind"] == "process" and r["pid"] == os.getpid())
    assert proc_row["exe"] == os.path.realpath(sys.executable)


@pytest.mark.parametrize("dropped", ROOT_SET)
def test_missing_required_capability_is_named(tmp_path, dropped):
    principal = Principal(0, tuple(c for c in ROOT_SET if c != dropped))
    out = subprocess.run(
        principal.capsh() + [str(BIN / "oisp-record"), "--segments-dir", str(tmp_path / "segments"),
                             "--duration", "1"],
        capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 1, out.stderr
    assert "Traceback" not in out.stderr
    errors = [line for line in out.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1, out.stderr
    assert f"missing {dropped.upper()} (" in errors[0]
    for other in set(ROOT_SET) - {dropped}:
        assert other.upper() not in errors[0]
    assert not (tmp_path / "segments").exists()  # refused before anything was written


def test_non_root_without_dac_override_is_refused_when_uprobes_need_tracefs(tmp_path):
    """Without CAP_DAC_OVERRIDE a non-root uid cannot write tracefs; CAP_DAC_READ_SEARCH lets it
    look in (and reach this VM's interpreter under /root). Whether that matters depends on the
    kernel: the uprobe PMU takes CAP_PERFMON alone on kernels before 'perf: Require CAP_SYS_ADMIN
    for uprobes' (2025), and the recorder must refuse exactly when the kernel would."""
    principal = Principal(NOBODY, (*ROOT_SET, "cap_dac_read_search"))
    work = recorder_dir(tmp_path, NOBODY)
    probe = subprocess.run(
        principal.capsh() + [sys.executable, "-c", "from recorder.capture import preflight; "
                             "print(preflight.uprobe_pmu_usable())"],
        cwd=REPO, capture_output=True, text=True, check=True, timeout=60,
    )
    pmu_usable = probe.stdout.strip() == "True"
    out = subprocess.run(principal.capsh() + [str(BIN / "oisp-record"), "--check"],
                         cwd=work, capture_output=True, text=True, timeout=120)
    assert "Traceback" not in out.stderr
    if pmu_usable:
        assert out.returncode == 0 and "uprobes: uprobe PMU" in out.stderr, out.stderr
    else:
        assert out.returncode == 1, out.stderr
        assert "uprobe_events is not writable" in out.stderr and "CAP_DAC_OVERRIDE" in out.stderr
