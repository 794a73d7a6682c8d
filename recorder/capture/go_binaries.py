"""Analyze a Go executable for the crypto/tls probes: its Go version and calling convention, and the
file offsets of the entry and of every return instruction of crypto/tls.(*Conn).Write/Read/Close.

Go programs do not use libssl: crypto/tls is compiled into each program, so the recorder probes the
program's own functions. Uretprobes break Go (the runtime moves goroutine stacks, and a rewritten
return address crashes it), so returns are probed with a uprobe on each RET instruction, found by
disassembling the function with capstone (a 0xC3 byte may be part of another instruction).
Entries are probed past the function's stack-bound check, not at its first instruction: when the
goroutine's stack is too small, the check calls runtime.morestack, which grows it and jumps back to the
first instruction, so a probe there would fire twice for one call (and record a Write's bytes twice).

Symbols come from .symtab, or, in a stripped program, from the pclntab, which Go always keeps (the
runtime needs it for stack traces). The Go version comes from the build info (.go.buildinfo).
Only files, no processes, and no bcc: this module is pure Python. It reads untrusted programs:
`inspect` never raises on a malformed file, it logs once and returns None or a GoBinary without
functions.
"""

from __future__ import annotations

import logging
import platform
import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import islice
from typing import BinaryIO

import capstone
from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

log = logging.getLogger("oisp.record")

WRITE, READ, CLOSE = "crypto/tls.(*Conn).Write", "crypto/tls.(*Conn).Read", "crypto/tls.(*Conn).Close"
CLIENT_HANDSHAKE = "crypto/tls.(*Conn).clientHandshake"
SERVER_HANDSHAKE = "crypto/tls.(*Conn).serverHandshake"
SERVER_NAME = "crypto/tls.hostnameInSNI"  # returns the server name a client sends
TLS_FUNCTIONS = (WRITE, READ, CLOSE, CLIENT_HANDSHAKE, SERVER_HANDSHAKE, SERVER_NAME)
# Without these nothing can be captured: their entries and returns carry the plaintext.
ESSENTIAL = (WRITE, READ)

BUILDINFO_MAGIC = b"\xff Go buildinf:"
# pclntab header magics: Go 1.16-1.17, 1.18-1.19, 1.20+ (1.2-1.15's 0xfffffffb is not read: those
# versions predate the register ABI and are only analyzed through .symtab).
PCLNTAB_GO116, PCLNTAB_GO118, PCLNTAB_GO120 = 0xFFFFFFFA, 0xFFFFFFF0, 0xFFFFFFF1
PCLNTAB_SECTIONS = (".gopclntab", ".data.rel.ro.gopclntab")  # the second in PIE builds
MAX_FUNCTION_SIZE = 1 << 20  # a larger "function" means a corrupted table
# The largest symbol or pclntab section read: Go's biggest programs (kubelet, 100+ MB) have tables of
# tens of MB; a file claiming more is corrupt or hostile and would only cost the recorder memory.
MAX_TABLE_BYTES = 256 << 20
ARCHES = {"EM_X86_64": "amd64", "EM_AARCH64": "arm64", "EM_386": "386", "EM_ARM": "arm"}
HOST_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
# Go's register-based calling convention: amd64 since 1.17, arm64 since 1.18.
REGISTER_ABI_SINCE = {"amd64": (1, 17), "arm64": (1, 18)}
VERSION = re.compile(r"^(devel )?go(\d+)\.(\d+)[\w.+\- :]*$")

# What a truncated or corrupted program can make the parsers below raise.
_MALFORMED = (ELFError, struct.error, ValueError, IndexError, KeyError, AssertionError, capstone.CsError)


class MalformedGoBinary(ValueError):
    """A table of the program is not what its header promises."""


@dataclass(frozen=True)
class GoFunction:
    name: str
    address: int  # virtual address of the entry
    size: int
    entry_offset: int  # file offset of the first instruction
    return_offsets: tuple[int, ...]  # file offsets of each RET instruction in the function
    # file offset of the first instruction past the stack-bound check, which runs once per call: where
    # the entry probe attaches (the arguments are still in their registers there); the entry when the
    # function has no check (a NOSPLIT function) or one of an unknown shape
    probe_offset: int

    @property
    def probe_address(self) -> int:
        """Virtual address of probe_offset."""
        return self.address + self.probe_offset - self.entry_offset

    @property
    def return_addresses(self) -> tuple[int, ...]:
        """Virtual addresses of the RET instructions (what bcc's attach_uprobe(addr=) takes)."""
        return tuple(self.address + off - self.entry_offset for off in self.return_offsets)


@dataclass(frozen=True)
class GoBinary:
    path: str
    go_version: str | None  # e.g. "go1.19.8"; None when the build info is missing or unreadable
    arch: str  # GOARCH: "amd64", "arm64", ...
    register_abi: bool  # arguments in registers (else on the stack)
    stripped: bool  # no .symtab: functions were found through the pclntab
    functions: dict[str, GoFunction]  # those of TLS_FUNCTIONS the program has
    has_tls: bool = False  # crypto/tls is in the program (its functions are named in its tables)


def unsupported_reason(go: GoBinary, host_arch: str | None = None) -> str | None:
    """Why the program's crypto/tls cannot be probed on this node, or None when it can."""
    host = host_arch or HOST_ARCH
    if go.arch != host:
        return f"built for {go.arch}, this node runs {host}"
    if go.go_version is None:
        return "no readable Go version (build info): its calling convention is unknown"
    if not go.register_abi:
        return (f"{go.go_version} passes arguments on the stack (the register ABI came with go1.17 on amd64, "
                "go1.18 on arm64)")
    missing = [name for name in ESSENTIAL if name not in go.functions]
    if missing:
        return f"{', '.join(missing)} not found in its code"
    if not all(go.functions[name].return_offsets for name in ESSENTIAL):
        return "no return instruction found in crypto/tls.(*Conn).Write or Read"
    return None


def inspect(path: str) -> GoBinary | None:
    """The Go program at `path`, or None if it is not a Go executable (or not readable as one)."""
    try:
        with open(path, "rb") as f:
            if f.read(4) != b"\x7fELF":
                return None
            f.seek(0)
            return _inspect_elf(path, f)
    except OSError as e:
        log.debug("%s: not inspected: %s", path, e)
    except _MALFORMED as e:
        log.warning("%s: not analyzed as a Go program: %s", path, e)
    return None


def _inspect_elf(path: str, f: BinaryIO) -> GoBinary | None:
    elf = ELFFile(f)
    buildinfo = elf.get_section_by_name(".go.buildinfo")
    pclntab = next(filter(None, map(elf.get_section_by_name, PCLNTAB_SECTIONS)), None)
    if buildinfo is None and pclntab is None:
        return None
    image = _Image(f, elf)
    arch = ARCHES.get(elf["e_machine"], str(elf["e_machine"]).lower())
    version = None
    if buildinfo is not None:
        try:
            version = buildinfo_version(buildinfo.data(), image.read)
        except _MALFORMED as e:
            log.warning("%s: unreadable Go build info: %s", path, e)
    parsed = parse_version(version)
    symtab = elf.get_section_by_name(".symtab")
    for section in (symtab, pclntab, buildinfo):
        size = 0 if section is None or section["sh_type"] == "SHT_NOBITS" else section["sh_size"]
        if size > MAX_TABLE_BYTES:
            raise MalformedGoBinary(f"section {section.name} of {size} bytes is over the budget")
    functions: dict[str, GoFunction] = {}
    ranges: dict[str, tuple[int, int]] = {}
    if elf.elfclass == 64 and elf.little_endian:
        try:
            if symtab is not None:
                strtab = elf.get_section(symtab["sh_link"]).data()
                ranges = symtab_functions(symtab.data(), strtab, TLS_FUNCTIONS)
            elif pclntab is not None:
                text_start = _text_start_fallback(elf, pclntab)
                ranges = pclntab_functions(pclntab.data(), TLS_FUNCTIONS, text_start)
            # Without the version the calling convention is unknown: no probe could read the
            # arguments, so the code is not even disassembled.
            if parsed is not None and arch in _DISASSEMBLERS:
                functions = _with_returns(ranges, image, arch)
        except _MALFORMED as e:
            log.warning("%s: Go program without usable symbols: %s", path, e)
    has_tls = any(name in ranges for name in ESSENTIAL)
    return GoBinary(path, version, arch, has_register_abi(version, arch), symtab is None, functions, has_tls)


def parse_version(version: str | None) -> tuple[int, int] | None:
    """(1, 19) for "go1.19.8"; None for no or an unrecognized version."""
    m = VERSION.match(version or "")
    return (int(m.group(2)), int(m.group(3))) if m else None


def has_register_abi(version: str | None, arch: str) -> bool:
    """Whether Go `version` passes arguments in registers on `arch` (False when unknown)."""
    parsed, since = parse_version(version), REGISTER_ABI_SINCE.get(arch)
    return parsed is not None and since is not None and parsed >= since


def buildinfo_version(info: bytes, read) -> str:
    """The Go version string of a .go.buildinfo section. Go 1.18+ stores it inline as a varint-prefixed
    string; Go 1.13-1.17 store a pointer to a Go string header, read with `read(vaddr, n) -> bytes`."""
    if len(info) < 32 or not info.startswith(BUILDINFO_MAGIC):
        raise MalformedGoBinary("no build info magic")
    ptr_size, flags = info[14], info[15]
    if flags & 2:
        n, pos = _uvarint(info, 32)
        raw = info[pos : pos + n]
    else:
        if ptr_size not in (4, 8):
            raise MalformedGoBinary(f"build info pointer size {ptr_size}")
        word = (">" if flags & 1 else "<") + ("Q" if ptr_size == 8 else "I")
        (header,) = struct.unpack_from(word, info, 16)
        data, n = struct.unpack(word[0] + word[1] * 2, read(header, 2 * ptr_size))
        raw = read(data, n) if 0 < n <= 128 else b""
    version = raw.decode("ascii", "replace")
    if parse_version(version) is None:
        raise MalformedGoBinary(f"unrecognized Go version {version[:40]!r}")
    return version


def _uvarint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while shift < 64:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
    raise MalformedGoBinary("varint too long")


def _name_offsets(table: bytes, names: Iterable[str]) -> dict[int, str]:
    """Offset of every NUL-terminated occurrence of each name in a string table."""
    found = {}
    for name in names:
        needle = name.encode() + b"\0"
        pos = table.find(needle)
        while pos >= 0:
            if pos == 0 or table[pos - 1] == 0:
                found[pos] = name
            pos = table.find(needle, pos + 1)
    return found


def symtab_functions(symtab: bytes, strtab: bytes, names: Iterable[str]) -> dict[str, tuple[int, int]]:
    """{name: (start, end) virtual addresses} of the named functions in an ELF64 little-endian .symtab.
    Unpacked directly: pyelftools' symbol objects take seconds on a large Go program."""
    wanted = _name_offsets(strtab, names)
    found = {}
    usable = len(symtab) - len(symtab) % 24
    for st_name, info, _other, _shndx, value, size in struct.iter_unpack("<IBBHQQ", symtab[:usable]):
        if st_name in wanted and info & 0xF == 2 and value:  # STT_FUNC
            found[wanted[st_name]] = (value, value + size)
    return found


def pclntab_functions(tab: bytes, names: Iterable[str], text_start: int) -> dict[str, tuple[int, int]]:
    """{name: (start, end) virtual addresses} of the named functions in a 64-bit little-endian Go
    1.16+ pclntab. A function ends where the next one starts. `text_start` serves when the header's
    own (Go 1.18+) is 0, as in a PIE before relocation; Go 1.16-1.17 store absolute addresses."""
    magic, pad, ptr_size = struct.unpack_from("<IH", tab, 0) + (tab[7],)
    if magic not in (PCLNTAB_GO116, PCLNTAB_GO118, PCLNTAB_GO120) or pad or ptr_size != 8:
        raise MalformedGoBinary(f"unsupported pclntab header {tab[:8].hex()}")
    header = struct.unpack_from("<8Q", tab, 8)
    nfunc = header[0]
    if magic == PCLNTAB_GO116:
        base, names_at, names_end, functab = 0, header[2], header[3], header[6]
        entry, name_field = "<QQ", 8
    else:
        base, names_at, names_end, functab = header[2] or text_start, header[3], header[4], header[7]
        entry, name_field = "<II", 4
    size = struct.calcsize(entry)
    if not 0 < nfunc <= len(tab) // size or not names_at <= names_end <= len(tab):
        raise MalformedGoBinary("pclntab offsets out of range")
    wanted = _name_offsets(tab[names_at:names_end], names)
    table = list(struct.iter_unpack(entry, tab[functab : functab + (nfunc + 1) * size]))
    if len(table) != nfunc + 1:
        raise MalformedGoBinary("truncated pclntab function table")
    found = {}
    for i in range(nfunc):
        (nameoff,) = struct.unpack_from("<i", tab, functab + table[i][1] + name_field)
        if nameoff in wanted:
            found[wanted[nameoff]] = (base + table[i][0], base + table[i + 1][0])
    return found


def _text_start_fallback(elf: ELFFile, pclntab) -> int:
    """runtime.text for a Go 1.18+ pclntab whose header says 0: the addend of the dynamic relocation
    that fills the header's textStart field in a PIE, else the .text section's address."""
    field = pclntab["sh_addr"] + 8 + 2 * 8
    for section in elf.iter_sections():
        if section["sh_type"] != "SHT_RELA" or not section["sh_flags"] & 2:  # SHF_ALLOC: dynamic
            continue
        data = section.data()
        for offset, _info, addend in struct.iter_unpack("<QQq", data[: len(data) - len(data) % 24]):
            if offset == field:
                return addend
    text = elf.get_section_by_name(".text")
    return text["sh_addr"] if text is not None else 0


def _with_returns(ranges: dict[str, tuple[int, int]], image: _Image, arch: str) -> dict[str, GoFunction]:
    functions = {}
    for name, (start, end) in ranges.items():
        entry = image.file_offset(start, executable=True)
        if entry is None or not 0 < end - start <= MAX_FUNCTION_SIZE:
            log.debug("%s: %s at %#x-%#x is not in the program's code", image.path, name, start, end)
            continue
        code = image.read(start, end - start)
        returns = tuple(entry + (vaddr - start) for vaddr in return_addresses(code, start, arch))
        probe = entry + (past_stack_check(code, start, arch) - start)
        functions[name] = GoFunction(name, start, end - start, entry, returns, probe)
    return functions


def _disassembler(arch: str) -> capstone.Cs:
    if arch == "amd64":
        return capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    arm64 = getattr(capstone, "CS_ARCH_ARM64", None) or capstone.CS_ARCH_AARCH64  # renamed in capstone 6
    return capstone.Cs(arm64, capstone.CS_MODE_ARM)


_DISASSEMBLERS = {"amd64": 1, "arm64": 4}  # arch: bytes to skip past an undecodable one


def return_addresses(code: bytes, address: int, arch: str) -> list[int]:
    """Virtual addresses of the RET instructions of `code`, loaded at `address`, by a linear sweep.
    Go puts no data in its functions' text (arm64 literal pools excepted), so a sweep stays aligned;
    an undecodable instruction is stepped over rather than ending the sweep."""
    md, step = _disassembler(arch), _DISASSEMBLERS[arch]
    returns, pos = [], 0
    while pos < len(code):
        done = pos
        for vaddr, size, mnemonic, _ in md.disasm_lite(code[pos:], address + pos):
            if mnemonic in ("ret", "retq"):
                returns.append(vaddr)
            done = vaddr - address + size
        pos = done if done >= len(code) else done + step
    return returns


PROLOGUE_INSTRUCTIONS = 6  # Go's stack check: at most 5 instructions (a huge frame's), then the body
MORESTACK_BLOCK_INSTRUCTIONS = 40  # spills, the call to morestack, reloads and the jump back


def past_stack_check(code: bytes, address: int, arch: str) -> int:
    """Virtual address of the first instruction after the stack-bound check of the function `code`,
    loaded at `address`: after the last conditional branch of the first few instructions whose target
    is a block that calls runtime.morestack and jumps back to `address`. That block makes the check
    what it is; without one (a NOSPLIT function, an unknown shape) the function's own address."""
    md = _disassembler(arch)
    past = address
    for vaddr, size, mnemonic, op_str in islice(md.disasm_lite(code, address), PROLOGUE_INSTRUCTIONS):
        target = _branch_target(mnemonic, op_str, conditional=True)
        if target is not None and address < target < address + len(code) and \
                _jumps_back_after_call(md, code, address, target):
            past = vaddr + size
    return past


def _branch_target(mnemonic: str, op_str: str, conditional: bool) -> int | None:
    """The target of a direct branch (x86 jcc/jmp, arm64 b.cond/b), or None for any other instruction."""
    if conditional:
        is_branch = (mnemonic.startswith("j") and mnemonic != "jmp") or mnemonic.startswith("b.")
    else:
        is_branch = mnemonic in ("jmp", "b")
    if not is_branch:
        return None
    try:
        return int(op_str.lstrip("#"), 16)
    except ValueError:
        return None  # an indirect branch


def _jumps_back_after_call(md: capstone.Cs, code: bytes, address: int, block: int) -> bool:
    """Whether the code at `block` calls a function, then jumps to `address` (the morestack block)."""
    called = False
    instructions = islice(md.disasm_lite(code[block - address:], block), MORESTACK_BLOCK_INSTRUCTIONS)
    for _vaddr, _size, mnemonic, op_str in instructions:
        if mnemonic in ("call", "bl"):
            called = True
        elif mnemonic in ("jmp", "b"):
            return called and _branch_target(mnemonic, op_str, conditional=False) == address
    return False


class _Image:
    """The program's loadable segments: virtual addresses to file offsets and bytes."""

    def __init__(self, f: BinaryIO, elf: ELFFile):
        self.f, self.path = f, getattr(f, "name", "?")
        self.segments = [
            (s["p_vaddr"], s["p_filesz"], s["p_offset"], bool(s["p_flags"] & 1))  # PF_X
            for s in elf.iter_segments()
            if s["p_type"] == "PT_LOAD"
        ]
        f.seek(0, 2)
        if any(offset + size > f.tell() for _, size, offset, _ in self.segments):
            raise MalformedGoBinary("truncated: a loadable segment ends past the end of the file")

    def file_offset(self, vaddr: int, executable: bool = False) -> int | None:
        for start, size, offset, x in self.segments:
            if start <= vaddr < start + size and (x or not executable):
                return vaddr - start + offset
        return None

    def read(self, vaddr: int, n: int) -> bytes:
        if n <= 0:
            return b""
        offset = self.file_offset(vaddr)
        if offset is None or self.file_offset(vaddr + n - 1) != offset + n - 1:
            raise MalformedGoBinary(f"{n} bytes at {vaddr:#x} are not in the file")
        self.f.seek(offset)
        data = self.f.read(n)
        if len(data) != n:
            raise MalformedGoBinary(f"file truncated at {offset:#x}")
        return data
