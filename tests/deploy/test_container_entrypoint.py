"""The image's entrypoint (container/entrypoint.sh) and its header merge (container/merge-kernel-headers.sh),
run on fake roots: which kernel headers the recorder gets, in which order, and that the analyzer and
other commands are run untouched. No container runtime needed (none works on the development VM)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

ENTRYPOINT = REPO / "container" / "entrypoint.sh"
MERGE = REPO / "container" / "merge-kernel-headers.sh"
RELEASE = "6.9.0-test"
FAKE_PROGRAM = """import json, os, sys
print(json.dumps({"argv": sys.argv[1:], "BCC_KERNEL_SOURCE": os.environ.get("BCC_KERNEL_SOURCE")}))
"""


def whole_tree(d: Path) -> Path:
    (d / "include" / "linux").mkdir(parents=True)
    (d / "arch" / "x86" / "include").mkdir(parents=True)
    return d


@pytest.fixture
def fake(tmp_path):
    """A fake root, a fake packaged fallback, and fake programs that print how they were run."""
    root = tmp_path / "root"
    (root / "lib" / "modules" / RELEASE).mkdir(parents=True)
    (root / "usr" / "src").mkdir(parents=True)
    (root / "sys" / "kernel").mkdir(parents=True)
    packaged = whole_tree(tmp_path / "opt" / "kernel-headers")
    (packaged / ".oisp-headers-version").write_text("6.1.0-57-amd64\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for prog in ("oisp-record", "oisp-analyze"):
        p = bin_dir / prog
        p.write_text(f"#!{sys.executable}\n" + FAKE_PROGRAM)
        p.chmod(0o755)
    return root, packaged, bin_dir


def run(fake, *args, env=None):
    root, packaged, bin_dir = fake
    environ = {k: v for k, v in os.environ.items() if k != "BCC_KERNEL_SOURCE"}
    environ.update(PATH=f"{bin_dir}:{environ['PATH']}", OISP_ROOT=str(root), OISP_KERNEL_RELEASE=RELEASE,
                   OISP_PACKAGED_HEADERS=str(packaged), **(env or {}))
    out = subprocess.run(["sh", str(ENTRYPOINT), *args], env=environ, capture_output=True, text=True,
                         timeout=30)
    return out.returncode, (json.loads(out.stdout) if out.stdout.strip() else None), out.stderr


def test_host_build_link_first_left_to_bcc(fake):
    root, packaged, _ = fake
    tree = whole_tree(root / "usr" / "src" / f"linux-headers-{RELEASE}")
    (root / "lib" / "modules" / RELEASE / "build").symlink_to(tree)
    code, ran, err = run(fake, "oisp-record", "--config", "/etc/oisp-sensor/config.yaml")
    assert code == 0 and ran["argv"] == ["--config", "/etc/oisp-sensor/config.yaml"]
    assert ran["BCC_KERNEL_SOURCE"] is None  # bcc's own default is /lib/modules/RELEASE/build
    assert f"kernel headers: the host's, {root}/lib/modules/{RELEASE}/build" in err


def test_dangling_build_link_says_why_and_falls_back(fake):
    root, packaged, _ = fake
    (root / "lib" / "modules" / RELEASE / "build").symlink_to(f"/nonexistent/usr/src/linux-headers-{RELEASE}")
    code, ran, err = run(fake, "oisp-record")
    assert code == 0 and ran["BCC_KERNEL_SOURCE"] == str(packaged)
    assert "which is not here (is the host's /usr/src mounted?)" in err
    assert "the image's packaged 6.1.0-57-amd64" in err


@pytest.mark.parametrize("layout", ["usr/src/kernels/{r}", "usr/src/linux-headers-{r}"])
def test_whole_host_tree_in_usr_src(fake, layout):
    root, _, _ = fake
    tree = whole_tree(root / layout.format(r=RELEASE))
    code, ran, err = run(fake, "oisp-record")
    assert code == 0 and ran["BCC_KERNEL_SOURCE"] == str(tree)
    assert f"kernel headers: the host's, {tree}" in err


def test_split_host_tree_is_not_taken_for_a_whole_one(fake):
    root, packaged, _ = fake
    (root / "usr" / "src" / f"linux-headers-{RELEASE}" / "include" / "generated").mkdir(parents=True)
    code, ran, _ = run(fake, "oisp-record")
    assert ran["BCC_KERNEL_SOURCE"] == str(packaged)


def test_kernel_archive_before_the_packaged_headers(fake):
    root, _, _ = fake
    (root / "sys" / "kernel" / "kheaders.tar.xz").write_bytes(b"")
    code, ran, err = run(fake, "oisp-record")
    assert code == 0 and ran["BCC_KERNEL_SOURCE"] is None  # bcc unpacks the archive itself
    assert "the kernel's own, /sys/kernel/kheaders.tar.xz" in err


def test_packaged_headers_last(fake):
    _, packaged, _ = fake
    code, ran, err = run(fake, "oisp-record", "--check")
    assert code == 0 and ran == {"argv": ["--check"], "BCC_KERNEL_SOURCE": str(packaged)}
    assert f"none from the host for {RELEASE}" in err


def test_no_headers_anywhere_still_runs_the_recorder_to_say_so(fake):
    _, packaged, _ = fake
    shutil.rmtree(packaged)
    code, ran, err = run(fake, "oisp-record")
    assert code == 0 and ran["BCC_KERNEL_SOURCE"] is None
    assert f"kernel headers: none found for {RELEASE}" in err


def test_headers_given_by_the_pod_win(fake):
    root, _, _ = fake
    whole_tree(root / "usr" / "src" / "kernels" / RELEASE)
    code, ran, err = run(fake, "oisp-record", env={"BCC_KERNEL_SOURCE": "/custom"})
    assert ran["BCC_KERNEL_SOURCE"] == "/custom" and "set by the pod" in err


def test_analyzer_and_other_commands_run_untouched(fake):
    code, ran, err = run(fake, "oisp-analyze", "/segments", "--follow", "--out", "/output/events.jsonl")
    assert code == 0 and ran == {"argv": ["/segments", "--follow", "--out", "/output/events.jsonl"],
                                 "BCC_KERNEL_SOURCE": None}
    assert err == ""  # no header search for the analyzer
    code, _, err = run(fake, "sh", "-c", "exit 3")
    assert code == 3
    code, _, err = run(fake)
    assert code == 2 and "usage: oisp-entrypoint" in err


def test_entrypoint_mounts_nothing():
    text = ENTRYPOINT.read_text()
    code = [ln for ln in text.splitlines() if not ln.lstrip().startswith("#")]
    assert not [ln for ln in code if "mount " in ln or "ln -s" in ln or "mkdir" in ln]


# ---- merge-kernel-headers.sh ----

def debian_split(src: Path, version: str, arch: str = "amd64") -> None:
    common = src / f"linux-headers-{version}-common"
    (common / "include" / "linux").mkdir(parents=True)
    (common / "include" / "linux" / "ptrace.h").write_text("common\n")
    (common / "arch" / "x86" / "include" / "asm").mkdir(parents=True)
    (common / "Makefile").write_text("# common\n")
    (common / "scripts").mkdir()
    hdr = src / f"linux-headers-{version}-{arch}"
    (hdr / "include" / "generated").mkdir(parents=True)
    (hdr / "include" / "generated" / "autoconf.h").write_text(version + "\n")
    (hdr / "arch" / "x86" / "include" / "generated").mkdir(parents=True)
    (hdr / ".config").write_text("CONFIG_X=y\n")
    (hdr / "scripts").symlink_to("../../lib/linux-kbuild/scripts")  # as Debian ships it


def test_merge_takes_the_newest_pair_into_one_tree(tmp_path):
    src, dest = tmp_path / "usr-src", tmp_path / "merged"
    for v in ("6.1.0-9", "6.1.0-57", "6.1.0-10"):
        debian_split(src, v)
    debian_split(src, "6.1.0-99", arch="arm64")  # another architecture is not taken
    out = subprocess.run(["sh", str(MERGE), str(src), str(dest), "amd64"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert (dest / ".oisp-headers-version").read_text() == "6.1.0-57-amd64\n"
    assert (dest / "include" / "generated" / "autoconf.h").read_text() == "6.1.0-57\n"
    assert (dest / "include" / "linux" / "ptrace.h").read_text() == "common\n"
    assert (dest / "arch" / "x86" / "include" / "asm").is_dir()
    assert (dest / "arch" / "x86" / "include" / "generated").is_dir()
    assert (dest / ".config").exists() and (dest / "scripts").is_dir() and not (dest / "scripts").is_symlink()


def test_merge_fails_clearly_without_headers(tmp_path):
    (tmp_path / "usr-src").mkdir()
    out = subprocess.run(["sh", str(MERGE), str(tmp_path / "usr-src"), str(tmp_path / "d"), "amd64"],
                         capture_output=True, text=True)
    assert out.returncode == 1 and "no linux-headers-*-amd64" in out.stderr
    (tmp_path / "usr-src" / "linux-headers-6.1.0-1-amd64" / "include").mkdir(parents=True)
    out = subprocess.run(["sh", str(MERGE), str(tmp_path / "usr-src"), str(tmp_path / "d"), "amd64"],
                         capture_output=True, text=True)
    assert out.returncode == 1 and "has no matching" in out.stderr


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed")
def test_shell_scripts_are_shellcheck_clean():
    scripts = [ENTRYPOINT, MERGE, REPO / "manifests" / "test.sh"]
    out = subprocess.run(["shellcheck", *map(str, scripts)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout
