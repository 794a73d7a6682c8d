"""The Go test programs of testbed/go/, built with the installed `go` (Debian's golang-go, installed by
scripts/setup.sh) into a test directory: module mode with no dependencies, the build cache there too,
CGO off so that the programs are static and run in any container image."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from conftest import REPO

SOURCES = REPO / "testbed" / "go"
# name -> (source directory, extra build flags)
PROGRAMS = {
    "aiclient": ("aiclient", []),
    "aiclient-stripped": ("aiclient", ["-ldflags=-s -w"]),
    "tlsserver": ("tlsserver", []),
    "notls": ("notls", []),
    "tlsbench": ("tlsbench", []),  # bench/go_probe_overhead.py only
    "stackgrow": ("stackgrow", []),
}
TEST_PROGRAMS = ("aiclient", "aiclient-stripped", "tlsserver", "notls", "stackgrow")


def require_go() -> None:
    if shutil.which("go") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("go is not installed (scripts/setup.sh installs golang-go)", pytrace=False)
        pytest.skip("go is not installed")


def build(root: Path, names: tuple[str, ...] = TEST_PROGRAMS) -> dict[str, Path]:
    """Build the named programs into root; returns name -> path."""
    require_go()
    env = {**os.environ, "GOCACHE": str(root / "cache"), "GOPATH": str(root / "gopath"),
           "GOFLAGS": "-mod=mod", "GOPROXY": "off", "CGO_ENABLED": "0", "HOME": str(root),
           "GOTOOLCHAIN": "local"}
    out = {}
    for name in names:
        source, flags = PROGRAMS[name]
        out[name] = root / name
        res = subprocess.run(["go", "build", *flags, "-o", str(out[name]), "."], cwd=SOURCES / source,
                             env=env, capture_output=True, text=True, timeout=600)
        assert res.returncode == 0, res.stderr[-3000:]
    return out


def with_go_version(program: Path, dest: Path, version: str) -> Path:
    """A copy of the program whose build info claims another Go version of the same length (e.g. a
    go1.16 the recorder must refuse: that release passed arguments on the stack)."""
    data = bytearray(program.read_bytes())
    with program.open("rb") as f:
        section = ELFFile(f).get_section_by_name(".go.buildinfo")
        start, size = section["sh_offset"], section["sh_size"]
    info = bytes(data[start:start + size])
    old = info[info.index(b"go1."):].split(b"\0", 1)[0][:len(version)]
    assert len(old) == len(version) and info.count(old) >= 1, (old, version)
    at = start + info.index(old)
    data[at:at + len(version)] = version.encode()
    dest.write_bytes(bytes(data))
    dest.chmod(0o755)
    return dest
