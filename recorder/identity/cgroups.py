"""cgroup v2 lookups: where the unified hierarchy is mounted, and the ids of cgroup paths.

bpf_get_current_cgroup_id() returns the id of a task's cgroup in the unified (v2) hierarchy, which
is the inode number of that cgroup's directory. On hybrid hosts the hierarchy is mounted at
/sys/fs/cgroup/unified rather than /sys/fs/cgroup.
"""

from __future__ import annotations

import os
from pathlib import Path


def cgroup2_root(mounts: Path = Path("/proc/self/mounts")) -> Path:
    for line in mounts.read_text().splitlines():
        parts = line.split()
        if len(parts) > 2 and parts[2] == "cgroup2":
            return Path(parts[1])
    raise ValueError("no cgroup v2 hierarchy is mounted: cgroup filters need one")


def cgroup_ids(paths: list[str], root: Path | None = None) -> list[int]:
    """The cgroup v2 ids of paths given relative to the hierarchy's root (e.g. /kubepods.slice)."""
    if not paths:
        return []
    root = root or cgroup2_root()
    ids = []
    for p in paths:
        full = root / p.lstrip("/")
        try:
            ids.append(os.stat(full).st_ino)
        except OSError as exc:
            raise ValueError(f"cgroup {p} not found under {root}: {exc.strerror}") from None
    return ids
