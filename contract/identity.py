"""Who a process was: the identity fields a segment's `process` rows carry (format version 2; the
workload fields, version 5).

The recorder fills them from /proc and the pod API; the analyzer reads them back from the rows.
Both use this one class so the field list lives in one place.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ProcessIdentity:
    """Who a pid was, as its segments' process rows say (columns: `process_start` is `start_ns`)."""

    ppid: int | None = None
    exe: str | None = None
    cmdline: tuple[str, ...] | None = None
    start_ns: int | None = None  # wall clock
    cgroup_path: str | None = None
    container_id: str | None = None
    container_runtime: str | None = None
    pod_uid: str | None = None
    pod_name: str | None = None
    pod_namespace: str | None = None
    container_name: str | None = None
    # version 5: what owns the pod and runs as it (the pod watch, recorder/identity/pods.py)
    service_account: str | None = None
    workload_kind: str | None = None  # the top owner's kind: Deployment, StatefulSet, DaemonSet, CronJob...
    workload_name: str | None = None
    container_image: str | None = None
    pod_labels: str | None = None  # the labels the config selects, as a JSON object (sorted keys)


# ProcessIdentity's fields and the segment columns they come from (the same name but for start_ns)
COLUMN_OF = {f: ("process_start" if f == "start_ns" else f) for f in ProcessIdentity.__dataclass_fields__}


def from_row(row: dict) -> ProcessIdentity:
    """The identity a process row carries (a column the row lacks is None), by field name."""
    values = {f: row.get(column) for f, column in COLUMN_OF.items()}
    values["cmdline"] = tuple(values["cmdline"]) if values["cmdline"] else None
    return ProcessIdentity(**values)
