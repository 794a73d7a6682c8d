"""Who a captured process is: read once from /proc while it runs, kept for the segments.

Every pid that appears in a capture is described by one `process` row per segment (ppid, uid, exe,
cmdline, start time, cgroup path, container and pod), so a segment read offline, years later and
far from the cluster, still says which pod made a call. /proc is read at the first record of a pid
(and again after it execs); a process already gone by then keeps what its records carry (comm, uid,
cgroup id) and the cgroup path found from the cgroup id.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from dataclasses import fields as dataclass_fields
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from contract import segment_format as sf
from contract.identity import ProcessIdentity
from recorder.identity import containers

log = logging.getLogger("oisp.record")

# How long a process that exited is remembered: records of its last calls may still be in flight.
FORGET_AFTER_EXIT_SECONDS = 30.0
# The cgroup tree is walked again for an unknown cgroup id at most this often.
CGROUP_WALK_INTERVAL_SECONDS = 5.0
# ProcessIdentity's fields that are segment columns of the same name (start_ns is process_start)
IDENTITY_COLUMNS = tuple(f.name for f in dataclass_fields(ProcessIdentity) if f.name != "start_ns")


@dataclass
class ProcessInfo:
    pid: int
    comm: str
    uid: int
    cgroup_id: int
    observed_ns: int  # wall clock, when /proc was read
    observed_mono_ns: int = 0
    from_proc: bool = False  # False: the process was gone before /proc could be read
    identity: ProcessIdentity = ProcessIdentity()  # what the process rows say beyond the record header


# (pod_uid, container_id) -> the ProcessIdentity fields the pod names (pod_name, pod_namespace,
# container_name, service_account, workload_kind, ...), or None
PodLookup = Callable[[str, str | None], dict[str, str | None] | None]


def _boot_time_ns(proc: Path) -> int:
    for line in (proc / "stat").read_text().splitlines():
        if line.startswith("btime "):
            return int(line.split()[1]) * 1_000_000_000
    return 0


class CgroupPaths:
    """cgroup v2 id -> path below the hierarchy's root (a cgroup's id is its directory's inode)."""

    def __init__(self, root: Path | None):
        self.root = root
        self._paths: dict[int, str] = {}
        self._walked_at = float("-inf")

    def path_of(self, cgroup_id: int) -> str | None:
        if self.root is None:
            return None
        if cgroup_id not in self._paths and time.monotonic() - self._walked_at > CGROUP_WALK_INTERVAL_SECONDS:
            self._walked_at = time.monotonic()
            root = str(self.root)
            for dirpath, _dirs, _files in os.walk(root):
                try:
                    ino = os.stat(dirpath).st_ino
                except OSError:
                    continue
                self._paths[ino] = "/" + os.path.relpath(dirpath, root).removeprefix(".")
        return self._paths.get(cgroup_id)


@dataclass
class ProcessRegistry:
    proc: Path = Path("/proc")
    cgroups: CgroupPaths = field(default_factory=lambda: CgroupPaths(None))
    pod_lookup: PodLookup | None = None
    _known: dict[int, ProcessInfo] = field(default_factory=dict)
    _exited: dict[int, float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._clock_ticks = os.sysconf("SC_CLK_TCK")
        self._boot_ns = _boot_time_ns(self.proc)

    def describe_new(self, table: pa.Table) -> int:
        """Read /proc for every pid of a decoded batch not yet known; returns how many were new."""
        if table.num_rows == 0:
            return 0
        pids = pc.unique(table["pid"]).to_pylist()
        with self._lock:
            new = [p for p in pids if p not in self._known]
        for pid in new:
            i = pc.index(table["pid"], pid).as_py()
            row = {name: table[name][i].as_py() for name in ("comm", "uid", "cgroup_id")}
            info = self.read(pid, row["comm"], row["uid"], row["cgroup_id"])
            with self._lock:
                self._known[pid] = info
        return len(new)

    def read(self, pid: int, comm: str, uid: int, cgroup_id: int) -> ProcessInfo:
        info = ProcessInfo(pid, comm, uid, cgroup_id, time.time_ns(), time.monotonic_ns())
        base = self.proc / str(pid)
        ppid = start_ns = cmdline = exe = cgroup_path = None
        try:
            stat = (base / "stat").read_text()
            # comm may hold spaces and parentheses: the fields after it start after the last ')'
            fields = stat[stat.rindex(")") + 2:].split()
            ppid = int(fields[1])
            start_ns = self._boot_ns + int(fields[19]) * 1_000_000_000 // self._clock_ticks
            raw = (base / "cmdline").read_bytes()
            cmdline = tuple(a.decode("utf-8", "replace") for a in raw.split(b"\0")[:-1]) or None
            cgroup_text = (base / "cgroup").read_text()
            info.from_proc = True
        except (OSError, ValueError, IndexError):
            cgroup_text = ""
        try:
            exe = os.readlink(base / "exe").removesuffix(" (deleted)")
        except OSError:
            pass
        for line in cgroup_text.splitlines():
            if line.startswith("0::"):
                cgroup_path = line[3:]
        if cgroup_path is None:
            cgroup_path = self.cgroups.path_of(cgroup_id)
        ident = (containers.from_proc_cgroup(cgroup_text) if cgroup_text
                 else containers.from_cgroup_path(cgroup_path or ""))
        info.identity = ProcessIdentity(
            ppid=ppid, exe=exe, cmdline=cmdline, start_ns=start_ns, cgroup_path=cgroup_path,
            container_id=ident.container_id, container_runtime=ident.runtime, pod_uid=ident.pod_uid)
        return info

    def on_exec(self, pid: int, comm: str, uid: int, cgroup_id: int) -> None:
        """The process runs a new program: describe it now, while it surely runs (a curl is gone
        within milliseconds, long before its records are decoded)."""
        info = self.read(pid, comm, uid, cgroup_id)
        with self._lock:
            self._known[pid] = info
            self._exited.pop(pid, None)

    def on_exit(self, pid: int) -> None:
        now = time.monotonic()
        with self._lock:
            if pid in self._known:
                self._exited[pid] = now
            # forget the exited after a while (most exec'd processes never make a TLS call)
            for gone in [p for p, t in self._exited.items() if now - t > FORGET_AFTER_EXIT_SECONDS]:
                self._known.pop(gone, None)
                del self._exited[gone]

    def rows(self, pids: Iterable[int], node: str) -> pa.Table:
        """`process` rows, in the segment schema, for the known pids among `pids`."""
        with self._lock:
            infos = [self._known[p] for p in sorted(pids) if p in self._known]
        # Pod names are looked up here, on the writer thread, never on the threads that drain the
        # ring buffer or react to execs: a lookup may wait for the API server.
        for info in infos:
            ident = info.identity
            if ident.pod_uid and ident.pod_name is None and self.pod_lookup is not None:
                found = self.pod_lookup(ident.pod_uid, ident.container_id)
                if found:
                    info.identity = replace(ident, **found)
        return process_rows(infos, node)


def process_rows(infos: list[ProcessInfo], node: str) -> pa.Table:
    n = len(infos)
    if n == 0:
        return sf.SCHEMA.empty_table()
    col = lambda name: [getattr(i, name) for i in infos]  # noqa: E731
    ident = lambda name: [getattr(i.identity, name) for i in infos]  # noqa: E731
    cols = {
        "kind": [sf.KIND_PROCESS] * n,
        "ts_wall": col("observed_ns"),
        "ts_mono_ns": col("observed_mono_ns"),
        "node": [node] * n,
        "pid": col("pid"),
        "tid": col("pid"),
        "uid": col("uid"),
        "comm": col("comm"),
        "cgroup_id": col("cgroup_id"),
        "process_start": ident("start_ns"),
        # the other identity fields are named as their columns
        **{name: ident(name) for name in IDENTITY_COLUMNS},
    }
    arrays = {}
    for f in sf.SCHEMA:
        if f.name in cols:
            value_type = f.type.value_type if pa.types.is_dictionary(f.type) else f.type
            arrays[f.name] = pa.array(cols[f.name], value_type).cast(f.type)
        else:
            arrays[f.name] = pa.nulls(n, f.type)
    return pa.Table.from_pydict(arrays, schema=sf.SCHEMA)
