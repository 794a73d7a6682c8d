"""TLS libraries inside the container image layers on the node's disk, found before any container maps
them.

A uprobe belongs to a file, and a container's process maps its libraries from the image layer
itself (overlayfs hands the mapping the real file of the layer): a libssl probed in its layer is
captured from a container's very first call, with no race between the container's start and
discovery. The layers of containerd, CRI-O and podman (containers/storage) and Docker are looked at
where those keep them, through the host's root as a process of the host shows it (a pod with the
host's PID namespace sees it there); only a few paths per layer, where images keep libssl, are
checked.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

# The directories whose entries are layers, and where in each entry the layer's files are.
LAYER_STORES = (
    ("var/lib/containers/storage/overlay", "diff"),  # podman, CRI-O (OpenShift)
    ("var/lib/containerd/io.containerd.snapshotter.v1.overlayfs/snapshots", "fs"),  # containerd
    ("var/lib/docker/overlay2", "diff"),  # Docker
)
LIB_DIRS = ("usr/lib/x86_64-linux-gnu", "lib/x86_64-linux-gnu", "usr/lib/aarch64-linux-gnu",
            "lib/aarch64-linux-gnu", "usr/lib64", "lib64", "usr/lib", "lib", "usr/local/lib",
            "usr/local/lib64", "usr/local/ssl/lib")
LIB_NAMES = ("libssl.so.3", "libssl.so.1.1")
MAX_LINKS = 8
FOUND_BY = "image layer"


@dataclass(frozen=True)
class LayerFile:
    path: str  # the file in the layer (through /proc/1/root)
    inside: str  # the path a container's process sees
    layer: str


def host_root(proc: Path = Path("/proc")) -> Path | None:
    """The host's root directory: /proc/1/root, or kthreadd's (/proc/2/root: kernel threads share
    init's root) where PID 1 refuses to be looked into (a non-dumpable init); None if neither opens."""
    for pid in ("1", "2"):
        root = proc / pid / "root"
        try:
            os.listdir(root)
            return root
        except OSError:
            continue
    return None


def layer_dirs(root: Path) -> Iterator[str]:
    """Every layer directory of every store on the node."""
    for store, files in LAYER_STORES:
        try:
            entries = os.scandir(root / store)
        except OSError:
            continue  # not this runtime
        with entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    yield str(Path(entry.path) / files)


def _resolve(layer: str, rel: str) -> str | None:
    """`rel` inside the layer, following symbolic links as a container would, within the layer only
    (a target in a lower layer is that layer's file, found there)."""
    path = os.path.join(layer, rel)
    for _ in range(MAX_LINKS):
        try:
            if not os.path.islink(path):
                return path if os.path.isfile(path) else None
            target = os.readlink(path)
        except OSError:
            return None
        path = os.path.join(layer, target.lstrip("/")) if target.startswith("/") else os.path.join(
            os.path.dirname(path), target)
    return None


def tls_files(layer: str) -> list[LayerFile]:
    """The libssl files a layer holds where images keep them."""
    found: list[LayerFile] = []
    seen: set[str] = set()
    for lib_dir in LIB_DIRS:
        for name in LIB_NAMES:
            real = _resolve(layer, f"{lib_dir}/{name}")
            if real is not None and real not in seen:
                seen.add(real)
                found.append(LayerFile(real, f"/{lib_dir}/{name}", layer))
    return found
