"""Find the TLS library files to probe: from the dynamic loader's cache and running processes.

A file is probed once however many processes map it, so files are identified by (device, inode).
Files inside containers are reached through /proc/PID/root. Besides libssl by name, any executable
file a process maps (its program included) that exports SSL_write and SSL_read is a TLS library:
that is how `node` and other binaries linking OpenSSL (or BoringSSL) statically are found. A Go
program with crypto/tls in it is one too (go_binaries.py): Go compiles its TLS into every program.
"""

from __future__ import annotations

import logging
import os
import re
import struct
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from recorder.capture import elf_exports, go_binaries
from recorder.capture.go_binaries import GoBinary

log = logging.getLogger("oisp.record")

# libssl 3.x and 1.1 (Debian/Ubuntu, RHEL, Alpine names); not libssl3.so, which is NSS.
LIBSSL_NAME = re.compile(r"(^|/)libssl\.so\.(3|1\.1)$")
ESSENTIAL_SSL = {"SSL_write", "SSL_read"}
# Source file names OpenSSL's libssl (1.1, 3.x) and BoringSSL's keep for their error reports.
SSL_CODE_MARKERS = (b"ssl/statem/statem_clnt.c", b"ssl/handshake_client.cc")
MAX_RODATA_SCAN = 64 << 20


@dataclass(frozen=True)
class LibraryFile:
    path: str  # path the probes attach through (may be /proc/PID/root/...)
    display_path: str  # path as the process sees it
    dev: int
    ino: int
    found_by: str
    static: bool = False  # a program or library carrying OpenSSL itself, not a libssl
    go: GoBinary | None = field(default=None, compare=False)  # a Go program: probed at its crypto/tls

    @property
    def tls_stack(self) -> str:
        return "go" if self.go is not None else "openssl"


def exported_symbols(path: str, names: list[str]) -> dict[str, int]:
    """The addresses (st_value) of those of `names` the ELF file defines and exports. Looked up
    through the dynamic symbol hash table (walking node's symbols takes seconds): by elf_exports
    where it can (about 1 ms), else by pyelftools (50 ms for node's table)."""
    fast = elf_exports.dynamic_exports(path, names)
    if fast is not None:
        return fast
    found: dict[str, int] = {}
    try:
        with open(path, "rb") as f:
            elf = ELFFile(f)
            table = elf.get_section_by_name(".gnu.hash") or elf.get_section_by_name(".hash")
            if table is None:
                return found
            for name in names:
                sym = table.get_symbol(name)
                if sym is not None and sym["st_shndx"] != "SHN_UNDEF" and sym["st_value"]:
                    found[name] = sym["st_value"]
    except (OSError, ELFError, ValueError, KeyError, AssertionError):
        pass
    return found


def symtab_symbols(path: str, names: list[str]) -> dict[str, int]:
    """The addresses of those of `names` the ELF file's .symtab defines as functions: a program that
    carries OpenSSL statically keeps its symbols there, not in its exports."""
    try:
        with open(path, "rb") as f:
            elf = ELFFile(f)
            symtab = elf.get_section_by_name(".symtab")
            if symtab is None or symtab["sh_size"] > go_binaries.MAX_TABLE_BYTES:
                return {}
            strtab = elf.get_section(symtab["sh_link"])
            if strtab["sh_size"] > go_binaries.MAX_TABLE_BYTES:
                return {}
            ranges = go_binaries.symtab_functions(symtab.data(), strtab.data(), names)
    except (OSError, ELFError, ValueError, KeyError, AssertionError, struct.error):
        return {}
    return {name: start for name, (start, _end) in ranges.items()}


def ssl_symbols(path: str, names: list[str]) -> dict[str, int]:
    """The addresses of the SSL_* functions of `names`: from the exports, else from .symtab."""
    found = exported_symbols(path, names)
    if ESSENTIAL_SSL <= set(found):
        return found
    return symtab_symbols(path, names) or found


def carries_ssl_code(path: str) -> bool:
    """Whether the file holds OpenSSL's (or BoringSSL's) TLS code, by the source file names its error
    reporting keeps in .rodata: how a stripped program with OpenSSL inside is recognized (libcrypto
    alone has none of them). Reads at most MAX_RODATA_SCAN bytes."""
    try:
        with open(path, "rb") as f:
            rodata = ELFFile(f).get_section_by_name(".rodata")
            if rodata is None or rodata["sh_type"] == "SHT_NOBITS":
                return False
            f.seek(rodata["sh_offset"])
            data = f.read(min(rodata["sh_size"], MAX_RODATA_SCAN))
    except (OSError, ELFError, ValueError, KeyError, AssertionError):
        return False
    return any(marker in data for marker in SSL_CODE_MARKERS)


def file_offsets(path: str, addresses: dict[str, int]) -> dict[str, int]:
    """Where in the file each virtual address (st_value) is: what a uprobe attaches to. Names whose
    address is in no loadable, executable segment are left out."""
    found: dict[str, int] = {}
    try:
        with open(path, "rb") as f:
            segments = [(s["p_vaddr"], s["p_filesz"], s["p_offset"]) for s in ELFFile(f).iter_segments()
                        if s["p_type"] == "PT_LOAD" and s["p_flags"] & 1]  # PF_X
    except (OSError, ELFError, ValueError, KeyError, AssertionError):
        return found
    for name, vaddr in addresses.items():
        for start, size, offset in segments:
            if start <= vaddr < start + size:
                found[name] = vaddr - start + offset
                break
    return found


def exports_ssl(path: str) -> bool:
    """True if the ELF file defines and exports SSL_write and SSL_read."""
    return len(exported_symbols(path, ["SSL_write", "SSL_read"])) == 2


def has_ssl_symbols(path: str) -> bool:
    """True if the ELF file defines SSL_write and SSL_read, exported or in its .symtab."""
    return ESSENTIAL_SSL <= set(ssl_symbols(path, sorted(ESSENTIAL_SSL)))


def file_identity(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def from_loader_cache() -> list[str]:
    try:
        out = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True, check=False).stdout
    except OSError:
        return []
    paths = []
    for line in out.splitlines():
        if "=>" not in line or "x86-64" not in line and "64bit" not in line and "AArch64" not in line:
            continue
        path = line.split("=>", 1)[1].strip()
        if LIBSSL_NAME.search(path):
            paths.append(path)
    return paths


def from_process_maps(proc: Path = Path("/proc")) -> list[tuple[int, str]]:
    """(pid, path inside the process) for every libssl mapped by a running process."""
    found: list[tuple[int, str]] = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "maps").read_text()
        except (OSError, UnicodeDecodeError):
            continue  # the process exited, or is a kernel thread
        seen: set[str] = set()
        for line in text.splitlines():
            parts = line.split(maxsplit=5)
            if len(parts) == 6 and LIBSSL_NAME.search(parts[5]) and parts[5] not in seen:
                seen.add(parts[5])
                found.append((int(entry.name), parts[5]))
    return found


def mapped_files(pid: int, proc: Path = Path("/proc")) -> list[str]:
    """Paths (as the process sees them) of the files a process maps executable, its program first."""
    base = proc / str(pid)
    found: list[str] = []
    try:
        exe = os.readlink(base / "exe")
        found.append(exe.removesuffix(" (deleted)"))
    except OSError:
        pass
    try:
        text = (base / "maps").read_text()
    except (OSError, UnicodeDecodeError):
        return found  # the process exited, or is a kernel thread
    for line in text.splitlines():
        parts = line.split(maxsplit=5)
        if len(parts) == 6 and "x" in parts[1] and parts[5].startswith("/") and parts[5] not in found:
            found.append(parts[5])
    return found


class LibraryFinder:
    """Decides which files of a process are TLS libraries, remembering every file it has looked at
    (by device and inode), so that each is opened and parsed once however many processes map it."""

    def __init__(self, proc: Path = Path("/proc")):
        self.proc = proc
        # (dev, ino) -> "openssl", a Go program with crypto/tls we can probe, or None (not TLS)
        self._verdict: dict[tuple[int, int], str | GoBinary | None] = {}
        self._by_content: dict[tuple[int, int, int], str | GoBinary | None] = {}  # (ino, size, mtime)
        # (inode, size) of the files judged since last taken: the capture program stops holding
        # processes at them (probes.py, mark_judged)
        self.judged: list[tuple[int, int]] = []
        # Go programs with crypto/tls that cannot be probed, by file: "path (go1.16, amd64): why"
        self.unsupported_go: dict[tuple[int, int], str] = {}
        # other files with TLS code that cannot be probed (a stripped static OpenSSL): "path: why"
        self.unsupported_other: dict[tuple[int, int], str] = {}

    def tls_files(self, pid: int) -> Iterator[LibraryFile]:
        """The process's TLS files, each handed out as soon as it is judged (its program first): a file
        can be probed before the process's other files are looked at, which takes a while the first
        time (every file is read once)."""
        for inside in mapped_files(pid, self.proc):
            path = f"{self.proc}/{pid}/root{inside}"
            try:
                st = os.stat(path)
            except OSError:
                continue
            ident = (st.st_dev, st.st_ino)
            if ident not in self._verdict:
                # one file seen through each container's overlay (a device of its own) is judged once
                content = (st.st_ino, st.st_size, st.st_mtime_ns)
                if content not in self._by_content:
                    self._by_content[content] = self._judge(path, inside, ident)
                    self.judged.append((st.st_ino, st.st_size))
                self._verdict[ident] = self._by_content[content]
            verdict = self._verdict[ident]
            if verdict is None:
                continue
            go = verdict if isinstance(verdict, GoBinary) else None
            static = not LIBSSL_NAME.search(inside)
            yield LibraryFile(path, inside, ident[0], ident[1], f"maps of pid {pid}", static, go)

    def take_judged(self) -> list[tuple[int, int]]:
        judged, self.judged = self.judged, []
        return judged

    def _judge(self, path: str, inside: str, ident: tuple[int, int]) -> str | GoBinary | None:
        if LIBSSL_NAME.search(inside) or has_ssl_symbols(path):
            return "openssl"
        go = go_binaries.inspect(path)
        if go is None and carries_ssl_code(path):
            why = "carries OpenSSL's TLS code but no symbols for SSL_write and SSL_read (stripped)"
            self.unsupported_other[ident] = f"{inside}: {why}"
            log.warning("%s %s: not probed", inside, why)
            return None
        if go is None or not go.has_tls:
            return None  # not Go, or a Go program that never uses TLS: left alone
        why = go_binaries.unsupported_reason(go)
        if why is None:
            return go
        self.unsupported_go[ident] = f"{inside} ({go.go_version or 'unknown version'}, {go.arch}): {why}"
        log.warning("Go program %s (%s, %s) uses crypto/tls but cannot be probed: %s", inside,
                    go.go_version or "unknown Go version", go.arch, why)
        return None


def discover(extra: list[str], scan: bool = True, maps: bool = True) -> list[LibraryFile]:
    """Every distinct TLS library file to probe, extra (configured) files first; with `scan`, the
    loader cache's and (with `maps`) those mapped by running processes."""
    result: list[LibraryFile] = []
    seen: set[tuple[int, int]] = set()

    def add(path: str, display: str, how: str) -> None:
        ident = file_identity(path)
        if ident is None:
            if how == "config":
                log.warning("configured library %s does not exist: skipped", path)
            return
        if ident in seen:
            return
        seen.add(ident)
        result.append(LibraryFile(path, display, ident[0], ident[1], how))

    for path in extra:
        add(os.path.realpath(path), path, "config")
    if scan:
        for path in from_loader_cache():
            add(os.path.realpath(path), os.path.realpath(path), "loader cache")
        for pid, path in from_process_maps() if maps else ():
            add(f"/proc/{pid}/root{path}", path, f"maps of pid {pid}")
    return result
