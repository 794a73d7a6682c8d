"""Look up a few exported functions of a 64-bit little-endian ELF file through its GNU hash table,
reading only the bytes the lookup needs.

pyelftools builds the whole hash table (every bucket and chain entry) as Python objects before the
first lookup: 45-70 ms for node's, which sat on the path from a program's exec to its probes (twice:
once to judge the file, once to attach). This reads the ELF header, the section headers and, per
name, one bucket, its chain and the symbols it names: about a millisecond. Every offset and index
comes from a file someone else wrote, so each is checked against the file's size before it is read.
Files this does not handle (32-bit, big-endian, only a SysV .hash) return None: the caller falls back
to pyelftools.
"""

from __future__ import annotations

import os
import struct

SHT_GNU_HASH = 0x6FFFFFF6
SHN_UNDEF = 0
SECTION_HEADER = struct.Struct("<IIQQQQIIQQ")  # Elf64_Shdr
SYMBOL = struct.Struct("<IBBHQQ")  # Elf64_Sym
MAX_SECTIONS = 1 << 16
MAX_CHAIN = 1 << 16  # symbols sharing one bucket: a real table has a handful


def gnu_hash(name: bytes) -> int:
    h = 5381
    for c in name:
        h = (h * 33 + c) & 0xFFFFFFFF
    return h


def dynamic_exports(path: str, names: list[str]) -> dict[str, int] | None:
    """st_value of each of `names` the file defines and exports, by its .gnu.hash; None where this
    file cannot be looked up this way (the caller uses pyelftools)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return {}
    try:
        return _lookup(fd, os.fstat(fd).st_size, names)
    except OSError:
        return {}
    finally:
        os.close(fd)


def _read(fd: int, size: int, offset: int, length: int) -> bytes | None:
    if offset < 0 or length < 0 or offset + length > size:
        return None
    data = os.pread(fd, length, offset)
    return data if len(data) == length else None


def _lookup(fd: int, size: int, names: list[str]) -> dict[str, int] | None:
    ident = _read(fd, size, 0, 64)
    if ident is None or ident[:4] != b"\x7fELF":
        return {}
    if ident[4] != 2 or ident[5] != 1:  # not ELFCLASS64, ELFDATA2LSB
        return None
    shoff, = struct.unpack_from("<Q", ident, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", ident, 0x3A)
    if shentsize != SECTION_HEADER.size or not 0 < shnum <= MAX_SECTIONS:
        return None
    table = _read(fd, size, shoff, shnum * shentsize)
    if table is None:
        return {}
    sections = [SECTION_HEADER.unpack_from(table, i * shentsize) for i in range(shnum)]
    gnu = next((s for s in sections if s[1] == SHT_GNU_HASH), None)
    if gnu is None:
        return None  # only a SysV .hash, or no dynamic symbols at all
    dynsym = sections[gnu[6]] if gnu[6] < shnum else None
    dynstr = sections[dynsym[6]] if dynsym is not None and dynsym[6] < shnum else None
    if dynsym is None or dynstr is None or dynsym[9] != SYMBOL.size:
        return {}
    hash_off, hash_size = gnu[4], gnu[5]
    head = _read(fd, size, hash_off, 16)
    if head is None:
        return {}
    nbuckets, symoffset, bloom_size, _shift = struct.unpack("<IIII", head)
    if nbuckets == 0:
        return {}
    buckets_off = hash_off + 16 + 8 * bloom_size
    chain_off = buckets_off + 4 * nbuckets
    nsyms = dynsym[5] // SYMBOL.size
    found: dict[str, int] = {}
    for name in names:
        raw = name.encode()
        h = gnu_hash(raw)
        bucket = _read(fd, size, buckets_off + 4 * (h % nbuckets), 4)
        if bucket is None or chain_off > hash_off + hash_size:
            return {}
        index, = struct.unpack("<I", bucket)
        if index < symoffset:
            continue  # empty bucket
        for _ in range(MAX_CHAIN):
            if index >= nsyms:
                break
            entry = _read(fd, size, chain_off + 4 * (index - symoffset), 4)
            if entry is None:
                break
            h2, = struct.unpack("<I", entry)
            if h2 | 1 == h | 1:
                sym = _read(fd, size, dynsym[4] + index * SYMBOL.size, SYMBOL.size)
                if sym is None:
                    break
                st_name, _info, _other, shndx, value, _size = SYMBOL.unpack(sym)
                if st_name < dynstr[5] and _read(fd, size, dynstr[4] + st_name, len(raw) + 1) == raw + b"\0":
                    if shndx != SHN_UNDEF and value:
                        found[name] = value
                    break
            if h2 & 1:
                break  # end of the chain
            index += 1
    return found
