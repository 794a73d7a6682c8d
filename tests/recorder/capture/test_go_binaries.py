"""Go executables analyzed for the crypto/tls probes, on real programs built with the installed `go`."""

from __future__ import annotations

import os
import random
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import capstone
import pytest
from elftools.elf.elffile import ELFFile

from recorder.capture import go_binaries, libraries
from recorder.capture.go_binaries import GoBinary, inspect

TLS_CLIENT = """package main

import (
	"fmt"
	"net/http"
)

func main() {
	resp, err := http.Get("https://api.openai.com/v1/models")
	if err != nil {
		fmt.Println(err)
		return
	}
	resp.Body.Close()
}
"""
NO_TLS = """package main

import "fmt"

func main() { fmt.Println("no TLS here") }
"""
WRITE, READ = "crypto/tls.(*Conn).Write", "crypto/tls.(*Conn).Read"


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, Path]:
    """The Go programs, built once: the TLS client plain, stripped, as a stripped PIE, for the other
    architecture (amd64 or arm64), and a program without TLS. GOPATH mode and caches in the test's
    directory: no network, no state outside."""
    if shutil.which("go") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("go is not installed (scripts/setup.sh installs golang-go)")
        pytest.skip("go is not installed")
    root = tmp_path_factory.mktemp("go")
    env = {**os.environ, "GO111MODULE": "off", "GOPATH": str(root / "gopath"), "GOCACHE": str(root / "cache"),
           "GOFLAGS": "", "CGO_ENABLED": "0", "HOME": str(root)}
    sources = {"client": TLS_CLIENT, "notls": NO_TLS}
    builds = {"client": ("client", []), "stripped": ("client", ["-ldflags=-s -w"]),
              "pie_stripped": ("client", ["-buildmode=pie", "-ldflags=-s -w"]), "notls": ("notls", []),
              "client_other_arch": ("client", [])}
    other_arch = "arm64" if go_binaries.HOST_ARCH == "amd64" else "amd64"
    out = {}
    for name, (source, flags) in builds.items():
        src = root / f"{source}.go"
        src.write_text(sources[source])
        out[name] = root / name
        arch = {"GOARCH": other_arch} if name == "client_other_arch" else {}
        subprocess.run(["go", "build", *flags, "-o", str(out[name]), str(src)], env={**env, **arch},
                       check=True, capture_output=True, timeout=300)
    return out


def _go_version() -> str:
    out = subprocess.run(["go", "env", "GOVERSION"], capture_output=True, text=True, check=True).stdout
    return out.strip()


def _offsets(binary: GoBinary) -> dict[str, tuple[int, tuple[int, ...]]]:
    return {name: (f.entry_offset, f.return_offsets, f.probe_offset)
            for name, f in binary.functions.items()}


def test_tls_client_is_analyzed(built):
    binary = inspect(str(built["client"]))
    assert binary is not None and not binary.stripped
    assert binary.go_version == _go_version()
    assert binary.arch == {"x86_64": "amd64", "aarch64": "arm64"}[os.uname().machine]
    assert binary.register_abi == go_binaries.has_register_abi(binary.go_version, binary.arch)
    assert binary.register_abi  # go >= 1.18 on amd64 or arm64
    assert {WRITE, READ} <= set(binary.functions)
    assert all(f.return_offsets for f in binary.functions.values())


def test_stripped_builds_give_the_same_offsets(built):
    plain, stripped, pie = (inspect(str(built[n])) for n in ("client", "stripped", "pie_stripped"))
    assert stripped.stripped and pie.stripped
    assert plain.go_version == stripped.go_version == pie.go_version
    assert _offsets(plain) == _offsets(stripped)
    assert set(pie.functions) == set(plain.functions)  # a PIE is laid out differently: offsets differ


def test_return_offsets_are_ret_instructions_inside_the_function(built):
    for name in ("client", "stripped", "pie_stripped"):
        binary = inspect(str(built[name]))
        data = built[name].read_bytes()
        md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
        for function in binary.functions.values():
            # the entry is the function's first instruction: for Go, the stack-bound check's load
            assert next(md.disasm_lite(data[function.entry_offset :], 0), None) is not None
            for ret in function.return_offsets:
                assert function.entry_offset < ret < function.entry_offset + function.size
                _, _, mnemonic, _ = next(md.disasm_lite(data[ret : ret + 16], 0))
                assert mnemonic == "ret", (function.name, ret)


@pytest.mark.parametrize("name", ["client", "pie_stripped", "client_other_arch"])
def test_entry_probes_sit_past_the_stack_check(built, name):
    """Go's prologue compares the stack pointer with the goroutine's bound and branches to a block that
    calls runtime.morestack and jumps back to the first instruction: the entry probe goes just past
    that branch, the one point of the prologue each call passes once, arguments still in registers."""
    binary = inspect(str(built[name]))
    arch = binary.arch
    data = built[name].read_bytes()
    md = go_binaries._disassembler(arch)
    for function in (binary.functions[n] for n in (WRITE, READ, go_binaries.CLOSE)):
        assert function.entry_offset < function.probe_offset < function.entry_offset + 24, function.name
        assert function.probe_address - function.address == function.probe_offset - function.entry_offset
        code = data[function.entry_offset : function.entry_offset + function.size]
        prologue = list(md.disasm_lite(code, function.address))
        ends = [vaddr + size - function.address for vaddr, size, _, _ in prologue]
        branch = prologue[ends.index(function.probe_offset - function.entry_offset)]
        assert branch[2] in ("jbe", "jb", "b.ls", "b.lo"), branch
        block = go_binaries._branch_target(branch[2], branch[3], conditional=True)
        tail = list(md.disasm_lite(code[block - function.address :], block))
        jump = next(i for i in tail if i[2] in ("jmp", "b"))
        assert go_binaries._branch_target(jump[2], jump[3], conditional=False) == function.address
        assert any(i[2] in ("call", "bl") for i in tail[: tail.index(jump)])
    # the prologue's shape on this host is what bpf/tls_capture.c's registers assume: only R12 written
    if name == "client" and arch == "amd64":
        write = binary.functions[WRITE]
        code = data[write.entry_offset : write.probe_offset]
        written = {op.split(",")[0] for _, _, mnemonic, op in md.disasm_lite(code, 0) if mnemonic == "lea"}
        assert written <= {"r12"}


@pytest.mark.parametrize(("code", "why"), [
    (bytes.fromhex("4889d8" "c3"), "no check: a NOSPLIT function"),
    # cmp rsp, [r14+0x10]; jbe +2 -> a block that returns instead of jumping back
    (bytes.fromhex("493b6610" "7602" "90c3" "c3"), "the branch's block is not morestack's"),
    # a backward branch: not a stack check
    (bytes.fromhex("493b6610" "76fa" "c3"), "a backward branch"),
    (b"\xff" * 8, "undecodable bytes"),
])
def test_no_stack_check_means_the_entry(code, why):
    assert go_binaries.past_stack_check(code, 0x401000, "amd64") == 0x401000, why


def test_pclntab_agrees_with_symtab(built):
    with open(built["client"], "rb") as f:
        elf = ELFFile(f)
        symtab = elf.get_section_by_name(".symtab")
        strtab = elf.get_section(symtab["sh_link"]).data()
        pclntab = elf.get_section_by_name(".gopclntab")
        text = elf.get_section_by_name(".text")["sh_addr"]
        names = [WRITE, READ, "main.main", "runtime.main", "net/http.(*Transport).roundTrip"]
        from_symtab = go_binaries.symtab_functions(symtab.data(), strtab, names)
        from_pclntab = go_binaries.pclntab_functions(pclntab.data(), names, text)
        assert set(from_symtab) == set(from_pclntab) == set(names)
        for name in names:
            start, end = from_symtab[name]
            assert from_pclntab[name][0] == start
            # the pclntab's end is the next function's start: the symbol's end plus INT3 padding
            assert from_pclntab[name][1] >= end
            f.seek(end - text + text_offset(elf))
            assert set(f.read(from_pclntab[name][1] - end)) <= {0xCC}


def text_offset(elf: ELFFile) -> int:
    return elf.get_section_by_name(".text")["sh_offset"]


def test_program_without_tls(built):
    binary = inspect(str(built["notls"]))
    assert binary is not None and binary.go_version == _go_version()
    assert binary.functions == {}


def test_not_go_programs(tmp_path):
    script = tmp_path / "script.py"
    script.write_text("#!/usr/bin/env python3\nprint('hi')\n")
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"\x7fELF" + random.Random(1).randbytes(4096))
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    libssl = next(Path(p) for p in libraries.from_loader_cache() if p.endswith("libssl.so.3"))
    python = Path(sys.executable).resolve()
    for path in (script, garbage, empty, libssl, python, tmp_path, tmp_path / "missing"):
        assert inspect(str(path)) is None, path


def _section(path: Path, name: str) -> tuple[int, int]:
    with open(path, "rb") as f:
        section = ELFFile(f).get_section_by_name(name)
        return section["sh_offset"], section["sh_size"]


def _damaged(path: Path, tmp_path: Path, label: str, edit) -> Path:
    data = bytearray(path.read_bytes())
    data = edit(data) or data
    out = tmp_path / label
    out.write_bytes(bytes(data))
    return out


def test_corrupted_tables_never_raise(built, tmp_path, caplog):
    stripped = built["stripped"]
    pcln, pcln_size = _section(stripped, ".gopclntab")
    info, _ = _section(stripped, ".go.buildinfo")

    def flip(at: int):
        def edit(data):
            data[at] ^= 0xFF
        return edit

    no_functions = {
        "pclntab_magic": flip(pcln),
        "pclntab_ptrsize": flip(pcln + 7),
        "pclntab_nfunc": flip(pcln + 8 + 3),
        "pclntab_functab_offset": flip(pcln + 8 + 7 * 8 + 3),
        "buildinfo_magic": flip(info + 3),
        "buildinfo_version_length": flip(info + 32),
        "cut_in_pclntab": lambda data: data[: pcln + pcln_size // 2],
        "cut_in_buildinfo": lambda data: data[: info + 20],
        "cut_in_header": lambda data: data[:40],
    }
    for label, edit in no_functions.items():
        result = inspect(str(_damaged(stripped, tmp_path, label, edit)))
        assert result is None or result.functions == {}, label
    assert "not analyzed as a Go program" in caplog.text or "without usable symbols" in caplog.text

    rng = random.Random(0)
    size = stripped.stat().st_size
    for i in range(40):  # random flips anywhere in the tables: any result, but no exception
        start, length = (pcln, pcln_size) if i % 2 else (info, 64)
        spots = [start + rng.randrange(length) for _ in range(rng.randint(1, 8))]

        def edit(data, spots=spots):
            for at in spots:
                data[at] = rng.randrange(256)
        result = inspect(str(_damaged(stripped, tmp_path, f"random{i}", edit)))
        for function in (result.functions.values() if result else ()):
            assert all(0 < ret < size for ret in (function.entry_offset, *function.return_offsets))


def test_buildinfo_layouts():
    inline = go_binaries.BUILDINFO_MAGIC + bytes([8, 2]) + bytes(16) + bytes([8]) + b"go1.21.3" + b"\x00" * 8
    assert go_binaries.buildinfo_version(inline, None) == "go1.21.3"
    # Go 1.13-1.17: a pointer to a string header {data, len} elsewhere in the program's memory
    memory = {0x5000: struct.pack("<QQ", 0x6000, 9), 0x6000: b"go1.16.15"}
    pointers = go_binaries.BUILDINFO_MAGIC + bytes([8, 0]) + struct.pack("<QQ", 0x5000, 0)
    assert go_binaries.buildinfo_version(pointers, lambda addr, n: memory[addr][:n]) == "go1.16.15"
    with pytest.raises(go_binaries.MalformedGoBinary):
        go_binaries.buildinfo_version(inline.replace(b"go1.21.3", b"\xff" * 8), None)


@pytest.mark.parametrize(("version", "arch", "expected"), [
    ("go1.16.15", "amd64", False), ("go1.17", "amd64", True), ("go1.17.13", "arm64", False),
    ("go1.18", "arm64", True), ("devel go1.23-abc", "amd64", True), ("go1.21.0", "386", False),
])
def test_register_abi(version, arch, expected):
    assert go_binaries.has_register_abi(version, arch) == expected


def _with_version(program: Path, dest: Path, version: str) -> Path:
    """A copy whose build info claims another Go version of the same length."""
    data = bytearray(program.read_bytes())
    start, size = _section(program, ".go.buildinfo")
    at = start + bytes(data[start:start + size]).index(b"go1.")
    data[at:at + len(version)] = version.encode()
    dest.write_bytes(bytes(data))
    return dest


def test_which_programs_can_be_probed(built, tmp_path):
    client, notls = inspect(str(built["client"])), inspect(str(built["notls"]))
    assert client.has_tls and go_binaries.unsupported_reason(client) is None
    assert not notls.has_tls
    other = "arm64" if client.arch == "amd64" else "amd64"
    assert go_binaries.unsupported_reason(client, host_arch=other) == (
        f"built for {client.arch}, this node runs {other}")
    old = inspect(str(_with_version(built["stripped"], tmp_path / "old", "go1.16.8")))
    assert old.go_version == "go1.16.8" and old.has_tls and not old.register_abi
    assert "go1.16.8 passes arguments on the stack" in go_binaries.unsupported_reason(old)
    # the return probes are where the data is: every function the probes need has them
    assert all(client.functions[name].return_addresses for name in go_binaries.ESSENTIAL)
    for f in client.functions.values():
        assert [a - f.address for a in f.return_addresses] == [o - f.entry_offset for o in f.return_offsets]


def _fake_proc(tmp_path: Path, programs: dict[int, Path]) -> Path:
    """A /proc with one process per program: its exe, no other mappings, root the real /."""
    proc = tmp_path / "proc"
    for pid, program in programs.items():
        (proc / str(pid)).mkdir(parents=True)
        (proc / str(pid) / "exe").symlink_to(program)
        (proc / str(pid) / "maps").write_text("")
        (proc / str(pid) / "root").symlink_to("/")
    return proc


def test_finder_probes_go_programs_and_says_once_which_it_cannot(built, tmp_path, caplog):
    old = _with_version(built["client"], tmp_path / "aiclient-old", "go1.16.8")
    proc = _fake_proc(tmp_path, {10: built["client"], 11: built["notls"], 12: old, 13: old})
    finder = libraries.LibraryFinder(proc)
    (found,) = list(finder.tls_files(10))
    assert found.go is not None and found.tls_stack == "go" and found.display_path == str(built["client"])
    assert list(finder.tls_files(11)) == []  # Go without crypto/tls: left alone, without a word
    with caplog.at_level("WARNING", logger="oisp.record"):
        assert [list(finder.tls_files(pid)) for pid in (12, 13, 12)] == [[], [], []]
    said = [r.getMessage() for r in caplog.records if "cannot be probed" in r.getMessage()]
    arch = found.go.arch
    assert said == [f"Go program {old} (go1.16.8, {arch}) uses crypto/tls but cannot be probed: go1.16.8 "
                    "passes arguments on the stack (the register ABI came with go1.17 on amd64, go1.18 on "
                    "arm64)"]
    why = said[0].split(": ", 1)[1]
    assert list(finder.unsupported_go.values()) == [f"{old} (go1.16.8, {arch}): {why}"]
    assert not any("notls" in r.getMessage() for r in caplog.records)
