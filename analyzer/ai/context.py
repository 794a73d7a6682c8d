"""Who made a call: the process, container and pod context of an event, from the connection.

Format version 2 segments carry it (process rows, sni and socket rows); version 1 segments give
the pid, comm, uid and cgroup id only. Command lines are redacted of secrets.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from functools import lru_cache

from analyzer.http.redaction import redact_cmdline
from analyzer.model import ConnectionInfo

# the recorder's runtime names -> the OISP host.container.runtime enum
_RUNTIMES = {"docker": "docker", "containerd": "containerd", "cri-containerd": "containerd",
             "cri-o": "crio", "podman": "podman"}


def _drop_none(d: dict) -> dict:
    return {k: v for k, v in d.items() if v is not None}


# A process's identity is the same in every event of its connections (a frozen ProcessIdentity): what is
# costly to derive from it, redacting the command line (9 us of 12 for a uvicorn command line), reading the
# pod labels' JSON, is derived once per value and kept (pure functions of immutable values; bounded). The
# events' dicts and lists are still built anew for each event. Only values up to _KEPT_CHARS are kept (a
# segment may hold a command line of megabytes).
_KEPT_CHARS = 8192


@lru_cache(maxsize=4096)
def _iso(ns: int) -> str:
    return datetime.fromtimestamp(ns // 1_000_000_000, UTC).strftime("%Y-%m-%dT%H:%M:%S") + \
        f".{ns % 1_000_000_000 // 1000:06d}Z"


@lru_cache(maxsize=4096)
def _redacted_cmdline(cmdline: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(redact_cmdline(cmdline))


def process_context(c: ConnectionInfo) -> dict:
    p = c.process
    out = {"pid": c.pid, "name": c.comm, "thread_id": c.tid}
    if p is None:
        return out
    args = None
    if p.cmdline:
        kept = sum(map(len, p.cmdline)) <= _KEPT_CHARS
        args = list(_redacted_cmdline(p.cmdline) if kept else _redacted_cmdline.__wrapped__(p.cmdline))
    out.update(_drop_none({
        "ppid": p.ppid, "exe": p.exe, "cmdline": " ".join(args) if args else None, "cmdline_args": args,
        "start_time": _iso(p.start_ns) if p.start_ns else None, "container_id": p.container_id,
        "cgroup": p.cgroup_path,
    }))
    return out


def host_context(c: ConnectionInfo) -> dict:
    out: dict = {"hostname": c.node, "os": "linux"}
    p = c.process
    if p is None:
        return out
    if p.container_id:
        out["container"] = _drop_none({"id": p.container_id, "name": p.container_name,
                                       "image": p.container_image,
                                       "runtime": _RUNTIMES.get(p.container_runtime or "", "other")})
    if p.pod_uid:
        out["k8s"] = _drop_none({"pod_uid": p.pod_uid, "pod_name": p.pod_name, "namespace": p.pod_namespace,
                                 "node_name": c.node,
                                 "deployment": p.workload_name if p.workload_kind == "Deployment" else None,
                                 # the pod's top owner (OISP names a Deployment only): any kind, and its name
                                 "workload_kind": p.workload_kind, "workload_name": p.workload_name,
                                 "service_account": p.service_account, "labels": pod_labels(p.pod_labels)})
    return out


def pod_labels(text: str | None) -> dict[str, str] | None:
    """The selected labels of a process row (a JSON object of strings); None when absent or not one."""
    if not text:
        return None
    items = _label_items(text) if len(text) <= _KEPT_CHARS else _label_items.__wrapped__(text)
    return dict(items) if items else None


@lru_cache(maxsize=4096)
def _label_items(text: str) -> tuple[tuple[str, str], ...] | None:
    try:
        labels = json.loads(text)
    except ValueError:
        return None
    if not isinstance(labels, dict):
        return None
    return tuple((str(k), v) for k, v in labels.items() if isinstance(v, str)) or None


def connection_attrs(c: ConnectionInfo) -> dict:
    """Connection identity for `attrs`: what the OISP envelope has no field for."""
    return _drop_none({
        "server_name": c.server_name,
        "peer_address": f"{c.peer_ip}:{c.peer_port}" if c.peer_ip else None,
        "local_address": f"{c.local_ip}:{c.local_port}" if c.local_ip else None,
        "socket_fd": c.fd,
        "socket_source": c.socket_source,
        "container_runtime": c.process.container_runtime if c.process else None,
        "tls_stack": c.tls_stack,
        "identity_unknown": unknown_identity(c),
        **server_end(c),
    })


def server_end(c: ConnectionInfo) -> dict:
    """Plaintext, both ends captured (a client and a server pod on one node): who served the call,
    for the client's events. Nothing otherwise (peer_address says where the server was)."""
    srv = c.counterpart
    if c.role != "client" or srv is None:
        return {}
    p = srv.process
    return _drop_none({
        "server_pid": srv.pid,
        "server_process": srv.comm,
        "server_pod": f"{p.pod_namespace}/{p.pod_name}" if p and p.pod_name else None,
        "server_container_id": p.container_id if p else None,
    })


def unknown_identity(c: ConnectionInfo) -> list[str] | None:
    """What the capture could not tell about the connection, said rather than left out. Only for
    segments that name their TLS stack (format 3): older recordings' events stay as they were."""
    if c.tls_stack is None:
        return None
    known = (("peer_address", c.peer_ip), ("socket_fd", c.fd))
    if c.tls_stack != "plaintext":  # no TLS, no server name to know
        known = (("server_name", c.server_name), *known)
    unknown = [name for name, value in known if value is None]
    return unknown or None
