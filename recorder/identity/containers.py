"""Container and pod identity from a process's cgroup path (/proc/PID/cgroup), for every runtime and
cgroup driver a Kubernetes or OpenShift node uses. A table of patterns, most specific first.

Examples of what the kernel shows:
- docker, cgroupfs:      /docker/<64 hex>
- docker, systemd:       /system.slice/docker-<64 hex>.scope
- containerd (CRI), cgroupfs: /kubepods/burstable/pod<uid>/<64 hex>
- containerd (CRI), systemd:  /kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid,
                              dashes as underscores>.slice/cri-containerd-<64 hex>.scope
- cri-o (OpenShift), systemd: /kubepods.slice/.../kubepods-pod<uid>.slice/crio-<64 hex>.scope
- podman:                 /libpod_parent/libpod-<64 hex>  or  /machine.slice/libpod-<64 hex>.scope
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_ID = r"([0-9a-f]{64})"
RUNTIME_PATTERNS = [
    ("cri-containerd", re.compile(rf"cri-containerd-{_ID}\.scope")),
    ("cri-o", re.compile(rf"crio-(?:conmon-)?{_ID}(?:\.scope)?")),
    ("docker", re.compile(rf"docker-{_ID}\.scope")),
    ("podman", re.compile(rf"libpod-(?:conmon-)?{_ID}(?:\.scope)?")),
    ("docker", re.compile(rf"/docker/{_ID}")),
    ("containerd", re.compile(rf"/kubepods[^ ]*/pod[0-9a-f-]{{36}}/{_ID}")),  # cgroupfs driver: no prefix
]
# pod UID: kubepods[-qos]-pod<uid>.slice (systemd, dashes as underscores) or /pod<uid>/ (cgroupfs)
_UID_US = r"[0-9a-f]{8}_[0-9a-f]{4}_[0-9a-f]{4}_[0-9a-f]{4}_[0-9a-f]{12}"
_UID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
POD_UID = re.compile(rf"kubepods[^/]*?-pod({_UID_US})\.slice|/pod({_UID})(?:/|$)")
QOS = re.compile(r"kubepods[-/.]?(burstable|besteffort)")


@dataclass(frozen=True)
class ContainerIdentity:
    container_id: str | None = None
    runtime: str | None = None
    pod_uid: str | None = None
    qos_class: str | None = None  # guaranteed, burstable, besteffort (Kubernetes only)


def from_cgroup_path(path: str) -> ContainerIdentity:
    """The identity a cgroup path reveals (all None for a host process)."""
    container_id = runtime = None
    for name, pattern in RUNTIME_PATTERNS:
        m = pattern.search(path)
        if m:
            container_id, runtime = m.group(1), name
            break
    pod_uid = qos = None
    m = POD_UID.search(path)
    if m:
        pod_uid = (m.group(1) or "").replace("_", "-") or m.group(2)
        q = QOS.search(path)
        qos = q.group(1) if q else "guaranteed"
    return ContainerIdentity(container_id, runtime, pod_uid, qos)


def from_proc_cgroup(text: str) -> ContainerIdentity:
    """The identity from the contents of /proc/PID/cgroup: the unified (v2) line first, then any v1
    line that reveals a container (hybrid hosts keep container cgroups in v1 controllers)."""
    lines = [ln.split(":", 2) for ln in text.splitlines() if ln.count(":") >= 2]
    ordered = [ln for ln in lines if ln[0] == "0"] + [ln for ln in lines if ln[0] != "0"]
    for _, _, path in ordered:
        ident = from_cgroup_path(path)
        if ident.container_id or ident.pod_uid:
            return ident
    return ContainerIdentity()
