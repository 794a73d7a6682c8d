"""Offsets of a few kernel structure members, read from the running kernel's BTF.

bcc compiles against whatever kernel headers it finds, which need not be the running kernel's (here
Debian's 6.1 headers on a 6.18 kernel: enough for uprobes, which read only registers). A program
that follows kernel pointers (task -> mm -> exe_file -> f_inode) needs the running kernel's layout:
/sys/kernel/btf/vmlinux describes every structure of the kernel it belongs to. This reads the
offsets of the members asked for, looking into anonymous structs and unions as C does, and hands
them to the program as #defines.

BTF layout (include/uapi/linux/btf.h): a header, then the type section (a btf_type, 12 bytes, each
followed by kind-specific data) and the string section.
"""

from __future__ import annotations

import struct
from pathlib import Path

VMLINUX = Path("/sys/kernel/btf/vmlinux")
BTF_MAGIC = 0xEB9F
KIND_STRUCT, KIND_UNION = 4, 5
# bytes of kind-specific data after each btf_type: fixed, or per vlen item
_FIXED = {1: 4, 3: 12, 14: 4, 17: 4}  # INT, ARRAY, VAR, DECL_TAG
_PER_ITEM = {4: 12, 5: 12, 6: 8, 13: 8, 15: 12, 19: 12}  # STRUCT, UNION, ENUM, FUNC_PROTO, DATASEC, ENUM64


class BtfError(ValueError):
    """The BTF is missing, malformed, or lacks a structure or member asked for."""


def _parse(data: bytes) -> tuple[list[tuple[int, int, list[tuple[int, int, int]]]], bytes]:
    """Every type as (name_off, kind, members), members as (name_off, type_id, bit_offset) for structs
    and unions; type ids start at 1."""
    if len(data) < 24:
        raise BtfError("BTF shorter than its header")
    magic, _version, _flags, hdr_len, type_off, type_len, str_off, str_len = struct.unpack_from(
        "<HBBIIIII", data)
    if magic != BTF_MAGIC:
        raise BtfError("not BTF (or not little-endian)")
    types_at, strings_at = hdr_len + type_off, hdr_len + str_off
    if types_at + type_len > len(data) or strings_at + str_len > len(data):
        raise BtfError("BTF sections beyond its end")
    strings = data[strings_at:strings_at + str_len]
    types: list[tuple[int, int, list[tuple[int, int, int]]]] = [(0, 0, [])]  # id 0: void
    pos, end = types_at, types_at + type_len
    while pos + 12 <= end:
        name_off, info, _size = struct.unpack_from("<III", data, pos)
        kind, vlen, kind_flag = (info >> 24) & 0x1F, info & 0xFFFF, info >> 31
        pos += 12
        members: list[tuple[int, int, int]] = []
        if kind in (KIND_STRUCT, KIND_UNION):
            for i in range(vlen):
                m_name, m_type, m_off = struct.unpack_from("<III", data, pos + 12 * i)
                members.append((m_name, m_type, m_off & 0xFFFFFF if kind_flag else m_off))
        if kind in _PER_ITEM:
            pos += _PER_ITEM[kind] * vlen
        else:
            pos += _FIXED.get(kind, 0)
        types.append((name_off, kind, members))
    return types, strings


def _name(strings: bytes, off: int) -> str:
    end = strings.find(b"\0", off)
    return strings[off:end if end >= 0 else len(strings)].decode("ascii", "replace")


def member_offsets(wanted: dict[str, list[str]], path: Path = VMLINUX) -> dict[tuple[str, str], int]:
    """Byte offsets of members: {struct name: [member, ...]} -> {(struct, member): offset}."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise BtfError(f"{path}: {exc.strerror}") from None
    types, strings = _parse(data)
    by_name: dict[str, int] = {}
    for type_id, (name_off, kind, members) in enumerate(types):
        if kind == KIND_STRUCT and members and name_off:
            by_name.setdefault(_name(strings, name_off), type_id)

    def find(type_id: int, member: str, depth: int = 0) -> int | None:
        """Bit offset of `member` in the struct or union, anonymous members included."""
        if depth > 8:
            return None
        for m_name, m_type, bit_off in types[type_id][2]:
            if m_name and _name(strings, m_name) == member:
                return bit_off
            if not m_name and 0 < m_type < len(types) and types[m_type][1] in (KIND_STRUCT, KIND_UNION):
                inner = find(m_type, member, depth + 1)
                if inner is not None:
                    return bit_off + inner
        return None

    found: dict[tuple[str, str], int] = {}
    for struct_name, names in wanted.items():
        if struct_name not in by_name:
            raise BtfError(f"struct {struct_name} not in {path}")
        for member in names:
            bits = find(by_name[struct_name], member)
            if bits is None or bits % 8:
                raise BtfError(f"struct {struct_name} has no member {member} at a byte offset")
            found[(struct_name, member)] = bits // 8
    return found
