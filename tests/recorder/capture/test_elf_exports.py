"""The GNU hash lookup of exported functions: the same answers as pyelftools on real files, and no
exception, hang or out-of-file read on files someone else wrote (truncated, corrupted tables)."""

from __future__ import annotations

import random
import shutil
import struct
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from recorder.capture import elf_exports

LIBSSL = Path("/usr/lib/x86_64-linux-gnu/libssl.so.3").resolve()
NAMES = ["SSL_write", "SSL_read", "SSL_write_ex", "SSL_read_ex", "SSL_get_fd", "SSL_set_fd", "SSL_free",
         "SSL_get_servername", "SSL_do_handshake", "SSL_nonexistent", "malloc", "OPENSSL_init_ssl"]


def by_pyelftools(path: str, names: list[str]) -> dict[str, int]:
    with open(path, "rb") as f:
        table = ELFFile(f).get_section_by_name(".gnu.hash")
        found = {}
        for name in names:
            sym = table.get_symbol(name)
            if sym is not None and sym["st_shndx"] != "SHN_UNDEF" and sym["st_value"]:
                found[name] = sym["st_value"]
        return found


@pytest.mark.parametrize("path", [str(LIBSSL), shutil.which("node"), shutil.which("curl"),
                                  str(Path("/usr/lib/x86_64-linux-gnu/libcrypto.so.3").resolve())])
def test_same_answers_as_pyelftools(path):
    if path is None:
        pytest.skip("not installed")  # node and curl are installed by scripts/setup.sh
    fast = elf_exports.dynamic_exports(path, NAMES)
    assert fast == by_pyelftools(path, NAMES)


def test_libssl_exports_its_functions_and_imports_are_not_exports():
    found = elf_exports.dynamic_exports(str(LIBSSL), NAMES)
    assert {"SSL_write", "SSL_read", "SSL_get_fd"} <= set(found)
    assert "malloc" not in found and "SSL_nonexistent" not in found  # malloc is imported (undefined)


def test_files_it_does_not_handle_say_so(tmp_path):
    text = tmp_path / "script"
    text.write_text("#!/bin/sh\n")
    assert elf_exports.dynamic_exports(str(text), NAMES) == {}
    assert elf_exports.dynamic_exports(str(tmp_path / "missing"), NAMES) == {}
    elf32 = tmp_path / "elf32"
    elf32.write_bytes(b"\x7fELF\x01\x01\x01" + bytes(57))
    assert elf_exports.dynamic_exports(str(elf32), NAMES) is None  # pyelftools' turn


def _gnu_hash_offset(data: bytes) -> int:
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shnum, = struct.unpack_from("<H", data, 0x3C)
    for i in range(shnum):
        header = elf_exports.SECTION_HEADER.unpack_from(data, shoff + 64 * i)
        if header[1] == elf_exports.SHT_GNU_HASH:
            return header[4]
    raise AssertionError("no .gnu.hash")


def test_truncated_files(tmp_path):
    data = LIBSSL.read_bytes()
    for cut in (10, 64, 100, len(data) // 3, len(data) // 2, len(data) - 200, len(data) - 1):
        part = tmp_path / f"cut{cut}"
        part.write_bytes(data[:cut])
        found = elf_exports.dynamic_exports(str(part), NAMES)
        assert found is None or set(found) <= set(NAMES)


def test_hostile_hash_tables(tmp_path):
    data = bytearray(LIBSSL.read_bytes())
    gnu = _gnu_hash_offset(data)
    cases = {
        "huge bucket count": (gnu, struct.pack("<I", 0xFFFFFFFF)),
        "zero buckets": (gnu, struct.pack("<I", 0)),
        "huge bloom": (gnu + 8, struct.pack("<I", 0x7FFFFFFF)),
        "symoffset zero": (gnu + 4, struct.pack("<I", 0)),
    }
    for name, (offset, patch) in cases.items():
        bad = bytearray(data)
        bad[offset:offset + len(patch)] = patch
        path = tmp_path / name.replace(" ", "_")
        path.write_bytes(bad)
        found = elf_exports.dynamic_exports(str(path), NAMES)
        assert found is None or set(found) <= set(NAMES), name
    # chains that never end (no entry has the end bit) and whose hashes all match: bounded
    nbuckets, symoffset, bloom_size, _ = struct.unpack_from("<IIII", data, gnu)
    chain = gnu + 16 + 8 * bloom_size + 4 * nbuckets
    endless = bytearray(data)
    for i in range(4096):
        struct.pack_into("<I", endless, chain + 4 * i, elf_exports.gnu_hash(b"SSL_write") & ~1)
    path = tmp_path / "endless"
    path.write_bytes(endless)
    assert set(elf_exports.dynamic_exports(str(path), NAMES) or {}) <= set(NAMES)


def test_random_corruption_never_raises(tmp_path):
    data = LIBSSL.read_bytes()
    gnu = _gnu_hash_offset(data)
    shoff, = struct.unpack_from("<Q", data, 0x28)
    rng = random.Random(16)
    path = tmp_path / "mutant"
    for _ in range(300):
        bad = bytearray(data)
        for _ in range(rng.randint(1, 16)):
            # the ELF header, the section headers and the hash table are what the lookup reads
            where = rng.choice((rng.randrange(64), shoff + rng.randrange(len(data) - shoff),
                                gnu + rng.randrange(4096)))
            bad[where % len(bad)] = rng.randrange(256)
        path.write_bytes(bad)
        found = elf_exports.dynamic_exports(str(path), NAMES)
        assert found is None or set(found) <= set(NAMES)
