"""Container and pod identity from real cgroup paths of each runtime and driver."""

from __future__ import annotations

import pytest

from recorder.identity.containers import from_cgroup_path, from_proc_cgroup

CID = "3f1c2a9d8b7e6f5a4c3b2a1908f7e6d5c4b3a2918f7e6d5c4b3a2918f7e6d5c4"
UID = "8d2f6c1e-4b3a-4f5e-9d8c-7b6a5f4e3d2c"
U_ = UID.replace("-", "_")

CASES = [
    # (cgroup path, container id, runtime, pod uid, qos)
    (f"/docker/{CID}", CID, "docker", None, None),
    (f"/system.slice/docker-{CID}.scope", CID, "docker", None, None),
    (f"/kubepods/burstable/pod{UID}/{CID}", CID, "containerd", UID, "burstable"),
    (f"/kubepods/pod{UID}/{CID}", CID, "containerd", UID, "guaranteed"),
    (f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{U_}.slice/cri-containerd-{CID}.scope",
     CID, "cri-containerd", UID, "burstable"),
    (f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{U_}.slice/crio-{CID}.scope",
     CID, "cri-o", UID, "besteffort"),
    (f"/kubepods.slice/kubepods-pod{U_}.slice/crio-{CID}.scope", CID, "cri-o", UID, "guaranteed"),
    (f"/kubepods.slice/kubepods-pod{U_}.slice/crio-conmon-{CID}.scope", CID, "cri-o", UID, "guaranteed"),
    (f"/libpod_parent/libpod-{CID}", CID, "podman", None, None),
    (f"/machine.slice/libpod-{CID}.scope/container", CID, "podman", None, None),
    ("/user.slice/user-1000.slice/session-2.scope", None, None, None, None),
    ("/", None, None, None, None),
]


@pytest.mark.parametrize("path, cid, runtime, pod, qos", CASES)
def test_cgroup_paths(path, cid, runtime, pod, qos):
    ident = from_cgroup_path(path)
    assert (ident.container_id, ident.runtime, ident.pod_uid, ident.qos_class) == (cid, runtime, pod, qos)


def test_proc_cgroup_hybrid_host():
    text = (f"9:name=systemd:/kubepods/burstable/pod{UID}/{CID}\n"
            f"4:memory:/kubepods/burstable/pod{UID}/{CID}\n0::/\n")
    ident = from_proc_cgroup(text)
    assert (ident.container_id, ident.pod_uid) == (CID, UID)
    assert from_proc_cgroup("0::/user.slice/user-0.slice/session-1.scope\n").container_id is None
