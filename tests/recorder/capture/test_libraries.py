"""Library discovery: the loader cache, running processes' maps, one probe set per distinct file."""

from __future__ import annotations

import os
import shutil

from recorder.capture import libraries


def test_loader_cache_finds_system_libssl():
    paths = libraries.from_loader_cache()
    assert any(p.endswith("libssl.so.3") for p in paths), paths
    assert not any(p.endswith("libssl3.so") for p in paths)  # NSS, not OpenSSL


def test_process_maps_are_scanned(tmp_path):
    proc = tmp_path / "proc"
    (proc / "123").mkdir(parents=True)
    (proc / "123" / "maps").write_text(
        "7f00-7f10 r--p 00000000 08:01 42 /opt/app/lib/libssl.so.1.1\n"
        "7f10-7f20 r-xp 00010000 08:01 42 /opt/app/lib/libssl.so.1.1\n"
        "7f20-7f30 r--p 00000000 08:01 43 /usr/lib/libcrypto.so.3\n"
    )
    (proc / "self").mkdir()  # not a pid: skipped
    (proc / "456").mkdir()  # no maps (process exited mid-scan): skipped
    assert libraries.from_process_maps(proc) == [(123, "/opt/app/lib/libssl.so.1.1")]


def test_one_entry_per_file_however_reached(tmp_path):
    system = libraries.from_loader_cache()[0]
    link = tmp_path / "libssl.so.3"
    os.symlink(system, link)
    copy = tmp_path / "copy" / "libssl.so.3"
    copy.parent.mkdir()
    shutil.copy(system, copy)
    found = libraries.discover([str(link), str(copy), "/nonexistent/libssl.so.3"], scan=True)
    inodes = [(f.dev, f.ino) for f in found]
    assert len(inodes) == len(set(inodes))
    assert found[0].found_by == "config" and found[1].path == str(copy)
    # this test process maps the system libssl (Python's ssl module): reached via /proc, not repeated
    assert sum(1 for f in found if os.path.samefile(f.path, system)) == 1


def test_task_storage_only_on_kernels_that_have_it():
    from recorder.capture.probes import task_storage_supported

    assert task_storage_supported("6.18.44-fc-v657") and task_storage_supported("5.11.0")
    assert not task_storage_supported("5.10.0-23-amd64") and not task_storage_supported("unknown")
