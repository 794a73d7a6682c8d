"""Finding libssl in container image layers on disk (fake stores in a test directory)."""

from __future__ import annotations

import os
from pathlib import Path

from recorder.capture import image_layers


def _layer(root: Path, store: str, name: str, files: str) -> Path:
    layer = root / store / name / files
    layer.mkdir(parents=True)
    return layer


def test_layers_of_every_runtime_and_their_libssl(tmp_path):
    podman = _layer(tmp_path, "var/lib/containers/storage/overlay", "aaa", "diff")
    snapshots = "var/lib/containerd/io.containerd.snapshotter.v1.overlayfs/snapshots"
    containerd = _layer(tmp_path, snapshots, "7", "fs")
    docker = _layer(tmp_path, "var/lib/docker/overlay2", "bbb", "diff")
    assert set(image_layers.layer_dirs(tmp_path)) == {str(podman), str(containerd), str(docker)}

    # Debian: a plain file; RHEL: an absolute symlink to the versioned file in the same layer
    (podman / "usr/lib/x86_64-linux-gnu").mkdir(parents=True)
    (podman / "usr/lib/x86_64-linux-gnu/libssl.so.3").write_bytes(b"\x7fELF")
    (containerd / "usr/lib64").mkdir(parents=True)
    (containerd / "usr/lib64/libssl.so.3.0.7").write_bytes(b"\x7fELF")
    os.symlink("/usr/lib64/libssl.so.3.0.7", containerd / "usr/lib64/libssl.so.3")
    # a symlink whose target lives in a lower layer: that layer's file, not this one's
    (docker / "usr/lib").mkdir(parents=True)
    os.symlink("libssl.so.3.0.2", docker / "usr/lib/libssl.so.3")
    # a link that points outside the layer is read inside it (as the container would), not followed out
    (docker / "lib").mkdir()
    os.symlink("/etc/passwd", docker / "lib/libssl.so.1.1")

    (found,) = image_layers.tls_files(str(podman))
    assert (found.inside, found.path) == ("/usr/lib/x86_64-linux-gnu/libssl.so.3",
                                          str(podman / "usr/lib/x86_64-linux-gnu/libssl.so.3"))
    (found,) = image_layers.tls_files(str(containerd))
    assert found.inside == "/usr/lib64/libssl.so.3" and found.path.endswith("usr/lib64/libssl.so.3.0.7")
    assert image_layers.tls_files(str(docker)) == []


def test_symlink_loops_end(tmp_path):
    layer = _layer(tmp_path, "var/lib/docker/overlay2", "c", "diff")
    (layer / "lib").mkdir()
    os.symlink("libssl.so.3", layer / "lib/libssl.so.3")
    assert image_layers.tls_files(str(layer)) == []
    assert list(image_layers.layer_dirs(tmp_path / "nothing-here")) == []
