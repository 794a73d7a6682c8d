"""Member offsets from BTF: the running kernel's, and hand-built blobs (anonymous unions, every kind of
type to skip over, bitfield encoding, damage)."""

from __future__ import annotations

import struct

import pytest

from recorder.capture import kernel_btf
from recorder.capture.probes import HOLD_MEMBERS


class Blob:
    """A little-endian BTF blob built type by type."""

    def __init__(self):
        self.strings = b"\0"
        self.types = b""

    def name(self, text: str) -> int:
        if not text:
            return 0
        off = len(self.strings)
        self.strings += text.encode() + b"\0"
        return off

    def add(self, name: str, kind: int, vlen: int, size: int, extra: bytes = b"", kind_flag: int = 0) -> None:
        info = (kind_flag << 31) | (kind << 24) | vlen
        self.types += struct.pack("<III", self.name(name), info, size) + extra

    def struct(self, name: str, members: list[tuple[str, int, int]], kind: int = 4,
               kind_flag: int = 0) -> None:
        extra = b"".join(struct.pack("<III", self.name(m), t, off) for m, t, off in members)
        self.add(name, kind, len(members), 64, extra, kind_flag)

    def bytes(self) -> bytes:
        size = len(self.types)
        header = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, size, size, len(self.strings))
        return header + self.types + self.strings


def sample() -> Blob:
    b = Blob()
    b.add("int", 1, 0, 4, struct.pack("<I", 32))  # 1: INT
    b.add("", 2, 0, 1)  # 2: PTR to int
    b.add("e", 6, 2, 4, struct.pack("<iI", 1, 0) + struct.pack("<iI", 2, 1))  # 3: ENUM, 2 values
    b.add("", 3, 0, 0, struct.pack("<III", 1, 1, 4))  # 4: ARRAY
    b.add("f", 13, 1, 1, struct.pack("<II", 0, 1))  # 5: FUNC_PROTO, 1 param
    b.struct("", [("x", 1, 0), ("y", 2, 32)], kind=5)  # 6: anonymous union
    b.struct("", [("deep", 1, 64)])  # 7: anonymous struct
    b.struct("outer", [("a", 1, 0), ("", 6, 64), ("", 7, 128), ("bits", 1, (3 << 24) | 256)],
             kind_flag=1)  # 8
    return b


def test_offsets_through_anonymous_members(tmp_path):
    path = tmp_path / "btf"
    path.write_bytes(sample().bytes())
    found = kernel_btf.member_offsets({"outer": ["a", "x", "y", "deep", "bits"]}, path)
    # y: 64 + 32 bits; deep: 128 + 64 bits; bits: kind_flag set, the bitfield size in the top 8 bits
    assert found == {("outer", "a"): 0, ("outer", "x"): 8, ("outer", "y"): 12, ("outer", "deep"): 24,
                     ("outer", "bits"): 32}


def test_missing_or_damaged(tmp_path):
    path = tmp_path / "btf"
    data = sample().bytes()
    path.write_bytes(data)
    with pytest.raises(kernel_btf.BtfError, match="no member nope"):
        kernel_btf.member_offsets({"outer": ["nope"]}, path)
    with pytest.raises(kernel_btf.BtfError, match="struct absent"):
        kernel_btf.member_offsets({"absent": ["a"]}, path)
    for bad in (b"", data[:10], b"\x00\x00" + data[2:], data[:-20]):
        path.write_bytes(bad)
        with pytest.raises(kernel_btf.BtfError):
            kernel_btf.member_offsets({"outer": ["a"]}, path)
    with pytest.raises(kernel_btf.BtfError):
        kernel_btf.member_offsets({"outer": ["a"]}, tmp_path / "none")


@pytest.mark.skipif(not kernel_btf.VMLINUX.exists(), reason="this kernel has no BTF")
def test_running_kernel_has_every_member_the_hold_code_follows():
    found = kernel_btf.member_offsets(HOLD_MEMBERS)
    assert set(found) == {(s, m) for s, ms in HOLD_MEMBERS.items() for m in ms}
    assert found[("inode", "i_size")] > found[("inode", "i_ino")] > 0
    assert found[("fdtable", "max_fds")] == 0  # the first member, in every release
    assert all(0 <= off < 16384 for off in found.values())

