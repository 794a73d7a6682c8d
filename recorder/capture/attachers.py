"""What is probed in a TLS library file, and the two ways of attaching it.

- LinkAttacher (Linux 5.15+): the kernel's BPF links, each probe carrying the file's lib_id as its
  cookie (uprobe_links.py): uprobe-multi links (6.6+, one per program and function) or perf-event
  links (one per probe). One set of programs serves every file: no cap on files, no compile when a
  file comes, and attaching is a few system calls at file offsets the recorder computed.
- SlotAttacher (older kernels, or `attach_mode: slots`): bcc's attach_uprobe, the entry programs of
  the file's slot (a copy per slot, compiled at start) telling the lib_id.

Return programs are shared either way: they read the lib_id the entry saved.
"""

from __future__ import annotations

import errno
import logging
import os
import resource
from collections.abc import Iterator
from dataclasses import dataclass, field

from recorder.capture import go_binaries as gb
from recorder.capture import uprobe_links
from recorder.capture.libraries import LibraryFile, file_offsets, ssl_symbols

log = logging.getLogger("oisp.record")

# (symbol, entry program prefix, shared return program or None). The return probe reads what the
# call really moved; the other functions only need their entry.
PROBES = [
    ("SSL_write", "entry_rw", "ret_write"),
    ("SSL_write_ex", "entry_rw_ex", "ret_write_ex"),
    ("SSL_read", "entry_rw", "ret_read"),
    ("SSL_read_ex", "entry_rw_ex", "ret_read_ex"),
    ("SSL_do_handshake", "entry_do_handshake", None),
    ("SSL_connect", "entry_connect", None),
    ("SSL_accept", "entry_accept", None),
    ("SSL_free", "entry_free", None),
    ("SSL_ctrl", "entry_ctrl", None),
    ("SSL_set_fd", "entry_set_fd", None),
    ("SSL_set_rfd", "entry_set_fd", None),
    ("SSL_set_wfd", "entry_set_fd", None),
]
# Go's crypto/tls, per function: (entry program prefix or None, shared program for each RET or None).
# Returns are probed at every return instruction, never with a uretprobe (go_binaries.py).
GO_PROBES = {
    gb.WRITE: ("go_write", None),  # at entry, all of b: bpf/tls_capture.c, go_write
    gb.READ: ("go_read", "go_ret_read"),
    gb.CLOSE: ("go_close", None),
    gb.CLIENT_HANDSHAKE: ("go_client_hs", None),
    gb.SERVER_HANDSHAKE: ("go_server_hs", None),
    gb.SERVER_NAME: (None, "go_ret_sni"),  # its result, on the goroutine clientHandshake noted
}
GO_TAILS = ("go_close", "go_client_hs", "go_server_hs", "go_write_shared")  # by TAIL_GO_* index
ENTRY_PROGRAMS = sorted({entry for _, entry, _ in PROBES} | {e for e, _ in GO_PROBES.values() if e})
SHARED_RETURNS = sorted({fn for _, _, fn in PROBES if fn} | {fn for _, fn in GO_PROBES.values() if fn})
# Without these a library is useless to us: nothing would be captured.
ESSENTIAL = {"SSL_write", "SSL_read"} | set(gb.ESSENTIAL)
LINK_SUFFIX = "c"  # the one set of entry programs: DEFINE_PROBES(c)


@dataclass
class AttachedLibrary:
    lib_id: int
    library: LibraryFile
    symbols: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    fd: int = -1  # held open: probes attach through /proc/self/fd, which outlives every process
    addresses: dict[str, int] = field(default_factory=dict)  # symbol -> address in the file (slots)
    # Go programs (slots): every address probed, with the probe (entries and each RET instruction)
    go_probes: list[tuple[int, str]] = field(default_factory=list)
    links: list[uprobe_links.Link] = field(default_factory=list)  # BPF links (links)
    points: int = 0  # instructions probed (links)

    @property
    def usable(self) -> bool:
        return not ESSENTIAL & set(self.missing)

    @property
    def probe_count(self) -> int:
        return self.points or len(self.go_probes) or len(self.symbols)

    @property
    def path(self) -> str:
        return f"/proc/{os.getpid()}/fd/{self.fd}"


def _go_functions(item: AttachedLibrary) -> Iterator[tuple[str, gb.GoFunction, str | None, str | None]]:
    """(name, function, entry program prefix, return program) of each Go function the program has;
    the others are noted missing."""
    for name, (entry_fn, ret_fn) in GO_PROBES.items():
        function = item.library.go.functions.get(name)
        if function is None:
            item.missing.append(name)
            continue
        yield name, function, entry_fn, ret_fn


def _go_points(function: gb.GoFunction, entry_fn: str | None, ret_fn: str | None,
               entry_name) -> list[tuple[int, int, str]]:
    """(virtual address, file offset, program) of each probe of a Go function, returns first: a call
    must never be entered (state saved) with no return probe to take it. The entry probe sits past the
    stack-bound check (go_binaries.past_stack_check), which runs once per call."""
    points = [(a, o, ret_fn) for a, o in zip(function.return_addresses, function.return_offsets,
                                              strict=True)] if ret_fn else []
    entry = [(function.probe_address, function.probe_offset, entry_name(entry_fn))] if entry_fn else []
    return points + entry


class LinkAttacher:
    def __init__(self, bpf, kprobe_type: int, multi: bool):
        self.bpf, self.kprobe_type, self.multi = bpf, kprobe_type, multi
        # programs for uprobe-multi links are loaded as such (their expected attach type)
        self.attach_type = uprobe_links.BPF_TRACE_UPROBE_MULTI if multi else -1
        self.events = None if multi else uprobe_links.UprobeEvents()
        self.out_of_fds = False

    def program_fd(self, program: str) -> int:
        # loaded once, then bcc's cache (CaptureProgram loads them all at start, with this type)
        return self.bpf.load_func(program, self.kprobe_type, attach_type=self.attach_type).fd

    def _links(self, item: AttachedLibrary, probes: list[tuple[int, str, bool]]) -> list[uprobe_links.Link]:
        """The links of one function's probes: one per probe, or one per (program, kind) with multi.
        On failure the ones made are closed and the error raised."""
        if not self.multi:
            groups = [([offset], program, ret) for offset, program, ret in probes]
        else:
            by: dict[tuple[str, bool], list[int]] = {}
            for offset, program, ret in probes:
                by.setdefault((program, ret), []).append(offset)
            groups = [(offsets, program, ret) for (program, ret), offsets in by.items()]
        done: list[uprobe_links.Link] = []
        try:
            for offsets, program, ret in groups:
                fd = self.program_fd(program)
                done.append(uprobe_links.attach_multi(fd, item.path, offsets, item.lib_id, ret)
                            if self.multi else
                            uprobe_links.attach(fd, self.events, item.path, offsets[0], item.lib_id, ret))
        except OSError:
            uprobe_links.detach_all(done, self.events)
            raise
        return done

    def attach_openssl(self, item: AttachedLibrary) -> None:
        offsets = file_offsets(item.path, ssl_symbols(item.path, [p[0] for p in PROBES]))
        for symbol, entry_fn, ret_fn in PROBES:
            if symbol not in offsets:
                item.missing.append(symbol)
                continue
            self._attach_all(item, symbol, [(offsets[symbol], f"{entry_fn}_{LINK_SUFFIX}", False)]
                             + ([(offsets[symbol], ret_fn, True)] if ret_fn else []))

    def attach_go(self, item: AttachedLibrary) -> None:
        for name, function, entry_fn, ret_fn in _go_functions(item):
            points = _go_points(function, entry_fn, ret_fn, lambda fn: f"{fn}_{LINK_SUFFIX}")
            self._attach_all(item, name, [(offset, program, False) for _, offset, program in points])

    def _attach_all(self, item: AttachedLibrary, name: str, probes: list[tuple[int, str, bool]]) -> None:
        """Every probe of one function, or none."""
        try:
            item.links.extend(self._links(item, probes))
            item.points += len(probes)
        except OSError as exc:
            if exc.errno == errno.EMFILE and not self.out_of_fds:
                self.out_of_fds = True  # said once: every later file fails the same way
                log.warning("out of file descriptors (each probe is one; open files limit %d): raise the "
                            "recorder's limit (ulimit -n, LimitNOFILE, the runtime's nofile) to probe "
                            "more files", resource.getrlimit(resource.RLIMIT_NOFILE)[0])
            log.debug("%s: %s not attached: %s", item.library.display_path, name, exc)
            item.missing.append(name)
            return
        item.symbols.append(name)

    def detach(self, item: AttachedLibrary) -> None:
        uprobe_links.detach_all(item.links, self.events)
        item.links.clear()

    def detach_many(self, items: list[AttachedLibrary]) -> None:
        uprobe_links.detach_all([link for item in items for link in item.links], self.events)
        for item in items:
            item.links.clear()


class SlotAttacher:
    """bcc's attach_uprobe with the entry programs of the file's slot (bcc raises bare Exception)."""

    def __init__(self, bpf):
        self.bpf = bpf

    def attach_openssl(self, item: AttachedLibrary) -> None:
        # Addresses from the hash table (or .symtab): bcc would walk the whole symbol table once per
        # probe, which for node's 100 MB binary delays the attach by a second or more.
        item.addresses = ssl_symbols(item.path, [p[0] for p in PROBES])
        for symbol, entry_fn, ret_fn in PROBES:
            where = {"addr": item.addresses[symbol]} if symbol in item.addresses else {"sym": symbol}
            try:
                self.bpf.attach_uprobe(name=item.path, fn_name=f"{entry_fn}_{item.lib_id}", **where)
                if ret_fn:
                    self.bpf.attach_uretprobe(name=item.path, fn_name=ret_fn, **where)
                item.symbols.append(symbol)
            except Exception as exc:  # noqa: BLE001
                item.missing.append(symbol)
                log.debug("%s: %s not attached: %s", item.library.display_path, symbol, exc)

    def attach_go(self, item: AttachedLibrary) -> None:
        for name, function, entry_fn, ret_fn in _go_functions(item):
            points = _go_points(function, entry_fn, ret_fn, lambda fn: f"{fn}_{item.lib_id}")
            done: list[tuple[int, str]] = []
            try:
                for addr, _offset, program in points:
                    self.bpf.attach_uprobe(name=item.path, addr=addr, fn_name=program)
                    done.append((addr, program))
            except Exception as exc:  # noqa: BLE001
                log.warning("%s: %s not probed: %s", item.library.display_path, name, exc)
                self._detach_addresses(item, done)
                item.missing.append(name)
                continue
            item.go_probes.extend(done)
            item.symbols.append(name)

    def _detach_addresses(self, item: AttachedLibrary, probes: list[tuple[int, str]]) -> None:
        for addr, _fn in probes:
            try:
                self.bpf.detach_uprobe(name=item.path, addr=addr)
            except Exception as exc:  # noqa: BLE001 - keep going: the slot is released either way
                log.warning("detaching %#x from %s failed: %s", addr, item.library.display_path, exc)

    def detach(self, item: AttachedLibrary) -> None:
        self._detach_addresses(item, item.go_probes)
        for symbol, _entry_fn, ret_fn in PROBES if item.library.go is None else ():
            if symbol not in item.symbols:
                continue
            where = {"addr": item.addresses[symbol]} if symbol in item.addresses else {"sym": symbol}
            try:
                self.bpf.detach_uprobe(name=item.path, **where)
                if ret_fn:
                    self.bpf.detach_uretprobe(name=item.path, **where)
            except Exception as exc:  # noqa: BLE001
                log.warning("detaching %s from %s failed: %s", symbol, item.library.display_path, exc)
