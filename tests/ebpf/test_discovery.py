"""Discovery of TLS users the recorder did not see at start: a static-OpenSSL `node`, a process in its
own mount namespace with a private libssl (a minimal container), and pod identity from a kubepods
cgroup. Real processes under the real recorder."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from conftest import REPO, read_segments, stream_bytes
from recorder.identity.cgroups import cgroup2_root
from testbed.fake_kube_api import FakeKubeApi, pod
from testbed.https_server import HttpsServer

pytestmark = pytest.mark.ebpf

SYSTEM_LIBSSL = Path("/usr/lib/x86_64-linux-gnu/libssl.so.3")
# A process must be captured from at most this long after its exec (the issue: within a second).
ATTACH_DEADLINE_MS = 1000


def captured_requests(table, pid: int, prefix: bytes) -> dict[int, bytes]:
    """request number -> captured egress bytes, for every connection of `pid` that carried one."""
    out = {}
    conns = {r["conn_id"] for r in table.to_pylist() if r["pid"] == pid and r["kind"] == "data"}
    for conn in conns:
        sent = stream_bytes(table, conn, "egress")
        if sent.startswith(b"POST " + prefix):
            out[int(sent.split(b" ")[1].rsplit(b"/", 1)[1])] = sent
    return out


def check_attach_latency(sent: list[dict], captured: dict[int, bytes]) -> float:
    """Every request made later than the deadline after exec is captured; returns the time after exec
    of the first captured request (ms)."""
    assert captured, "nothing captured"
    first = min(captured)
    missed_late = [s for s in sent if s["i"] not in captured and s["t_ms"] > ATTACH_DEADLINE_MS]
    assert not missed_late, f"requests after {ATTACH_DEADLINE_MS} ms not captured: {missed_late}"
    # once captured, always captured: the probe stays on the file
    assert sorted(captured) == list(range(first, len(sent)))
    return next(s["t_ms"] for s in sent if s["i"] == first)


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_node_static_openssl_is_found_on_exec(recorder_factory, pki, tmp_path):
    rec = recorder_factory()
    # node has not run since the recorder started: only its exec can reveal it
    assert not any(lib["path"].endswith("/node") for lib in rec.ready["libraries"])
    server = HttpsServer(pki.server_context())
    try:
        out = subprocess.run(["node", str(REPO / "testbed" / "node_client.js"), str(server.port),
                              str(pki.ca_file), "30", "50"], capture_output=True, text=True, timeout=120)
    finally:
        server.close()
    assert out.returncode == 0, out.stderr
    truth = json.loads(out.stdout)
    assert rec.stop() == 0, rec.log
    table = read_segments(rec.segments_dir)
    captured = captured_requests(table, truth["pid"], b"/node/")
    first_ms = check_attach_latency(truth["sent"], captured)
    print(f"node: first captured request {first_ms:.0f} ms after exec; {len(captured)}/30 captured")
    for i, sent in captured.items():
        assert sent.endswith(f"node request {i}".encode())
    rows = [r for r in table.to_pylist() if r["pid"] == truth["pid"]]
    assert {r["lib_path"] for r in rows if r["kind"] == "data"} == {os.path.realpath(shutil.which("node"))}
    assert "new TLS library" in rec.log
    # node gives OpenSSL memory BIOs, never an fd: the socket comes from the thread's connect()
    sockets = [r for r in rows if r["kind"] == "socket"]
    assert sockets and {r["socket_source"] for r in sockets} == {"thread_connect"}
    assert {r["peer_port"] for r in sockets} == {server.port}
    assert {r["server_name"] for r in rows if r["kind"] == "sni"} == {"localhost"}


def test_private_libssl_in_own_mount_namespace(recorder_factory, pki, tmp_path):
    """A process started after the recorder, in its own mount namespace where the system libssl path
    holds a private copy (another file, as in a container image), is captured from that file."""
    private = tmp_path / "private-libssl.so.3"
    shutil.copy2(SYSTEM_LIBSSL.resolve(), private)
    # The client runs in a cgroup of its own, the recorder captures only that cgroup: discovery
    # then ignores every other process's libraries, so two slots hold the host's libssl and the
    # copy, and the copy is detached once its process is gone (a slot is needed).
    cgroup = cgroup2_root() / f"oisp-test-{uuid.uuid4().hex[:8]}"
    cgroup.mkdir()
    rec = recorder_factory({"rescan_interval_seconds": 0.5, "max_library_files": 2},
                           args=["--cgroup", "/" + cgroup.name])
    server = HttpsServer(pki.server_context())
    script = (f"echo $$ > {cgroup}/cgroup.procs && mount --bind {private} {SYSTEM_LIBSSL.resolve()} && "
              f"exec {sys.executable} -m testbed.tls_repeat_client {server.port} {pki.ca_file} 30 50")
    try:
        out = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script], cwd=REPO,
                             capture_output=True, text=True, timeout=120)
    finally:
        server.close()
        cgroup.rmdir()
    assert out.returncode == 0, out.stderr
    truth = json.loads(out.stdout)
    # no process maps the private file any more and no slot is free: a rescan detaches it
    deadline = time.monotonic() + 30
    # (the host's libssl came from the loader cache and is never detached: this can only be the copy)
    while not any(" detached " in line and "libssl.so.3" in line for line in rec.log.splitlines()):
        assert time.monotonic() < deadline, rec.log
        time.sleep(0.1)  # polling the recorder's log, the signal that it detached
    assert rec.stop() == 0, rec.log
    table = read_segments(rec.segments_dir)
    captured = captured_requests(table, truth["pid"], b"/python/")
    first_ms = check_attach_latency(truth["sent"], captured)
    print(f"private libssl: first captured request {first_ms:.0f} ms after exec; {len(captured)}/30")
    # attributed to its own library file (found when the process opened it), not the host's libssl
    probed = [line for line in rec.log.splitlines()
              if " probed " in line and f"inode {private.stat().st_ino}," in line]
    assert len(probed) == 1 and f"pid {truth['pid']}" in probed[0], rec.log
    shown_as = probed[0].split(" probed ", 1)[1].split(" (", 1)[0]
    assert shown_as.endswith("/libssl.so.3")
    rows = [r for r in table.to_pylist() if r["pid"] == truth["pid"] and r["kind"] == "data"]
    assert {r["lib_path"] for r in rows} == {shown_as}
    host_lib = [lib for lib in rec.ready["libraries"] if lib["path"] == str(SYSTEM_LIBSSL.resolve())]
    assert host_lib, "the host's libssl was probed at start, as a different file"


def test_pod_identity_from_kubepods_cgroup(recorder_factory, pki, tmp_path):
    """A process placed in a cgroup named like a kubelet's (systemd driver, containerd) is recorded
    with that pod UID and container id, and with the pod's name, namespace, container, workload and
    service account from the API server's watch (a local HTTPS server checking the ServiceAccount token,
    through lightkube as in a cluster)."""
    root = cgroup2_root()
    pod_uid = str(uuid.uuid4())
    container_id = uuid.uuid4().hex + uuid.uuid4().hex
    pod_slice = f"kubepods-besteffort-pod{pod_uid.replace('-', '_')}.slice"
    cgroup = root / "kubepods.slice" / "kubepods-besteffort.slice" / pod_slice / \
        f"cri-containerd-{container_id}.scope"
    cgroup.mkdir(parents=True)
    cgroup_id = cgroup.stat().st_ino  # a cgroup v2 id is its directory's inode
    api = FakeKubeApi(pki, "token-of-the-test", "node-under-test")
    api.add_controller("ReplicaSet", "agent-6b7c9", "ml", ("Deployment", "agent"))
    api.event("ADDED", pod(pod_uid, "agent-6b7c9-q8z2x", "ml", "node-under-test", labels={"app": "agent"},
                           containers={"app": f"containerd://{container_id}"}, service_account="agent",
                           owner=("ReplicaSet", "agent-6b7c9")))
    token = tmp_path / "token"
    token.write_text("token-of-the-test")
    rec = recorder_factory({"kubernetes_metadata": "apiserver", "kubernetes_api_url": api.url,
                            "node_name": "node-under-test", "kubernetes_token_file": str(token),
                            "kubernetes_ca_file": str(pki.ca_file)})
    server = HttpsServer(pki.server_context())
    script = (f"echo $$ > {cgroup}/cgroup.procs && exec {sys.executable} "
              f"-m testbed.tls_repeat_client {server.port} {pki.ca_file} 3 10")
    try:
        out = subprocess.run(["sh", "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    finally:
        server.close()
        for d in (cgroup, cgroup.parent, cgroup.parent.parent, cgroup.parent.parent.parent):
            try:
                d.rmdir()
            except OSError:
                pass  # kubepods.slice may be a real one on a node
    assert out.returncode == 0, out.stderr
    truth = json.loads(out.stdout)
    try:
        assert rec.stop() == 0, rec.log  # pod names are looked up as segments are written
    finally:
        api.close()
    table = read_segments(rec.segments_dir)
    procs = [r for r in table.to_pylist() if r["kind"] == "process" and r["pid"] == truth["pid"]]
    assert procs, "no process row"
    p = procs[0]
    assert p["pod_uid"] == pod_uid
    assert p["container_id"] == container_id and p["container_runtime"] == "cri-containerd"
    assert p["cgroup_path"].endswith(f"/cri-containerd-{container_id}.scope")
    assert (p["pod_name"], p["pod_namespace"], p["container_name"]) == ("agent-6b7c9-q8z2x", "ml", "app")
    assert (p["workload_kind"], p["workload_name"], p["service_account"], p["container_image"]) == \
        ("Deployment", "agent", "agent", "registry.local/app:1")
    assert set(api.requests) == {("watch", "pods"), ("get", "replicasets")}
    # every row of the process carries the cgroup id of that cgroup
    assert {r["cgroup_id"] for r in table.to_pylist() if r["pid"] == truth["pid"]} == {cgroup_id}
