"""Compile the capture program with bcc, attach its uprobes to each library file, set filters.

The BPF C lives in bpf/; this module adds the build-time constants and one DEFINE_PROBES(n) per
library file, so every record names the library it came from.
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

from recorder.capture import go_binaries as gb
from recorder.capture.libraries import LibraryFile, exported_symbols
from recorder.config import RecorderConfig

log = logging.getLogger("oisp.record")

BPF_DIR = Path(os.environ.get("OISP_BPF_DIR", Path(__file__).resolve().parents[2] / "bpf"))
SOURCE = BPF_DIR / "tls_capture.c"

# (symbol, entry function prefix, shared return function or None). The return probe reads what the
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
# Without these a library is useless to us: nothing would be captured.
ESSENTIAL = {"SSL_write", "SSL_read"} | set(gb.ESSENTIAL)

# Go's crypto/tls, per function: (entry function prefix or None, shared program for each RET or None).
# Returns are probed at every return instruction, never with a uretprobe (go_binaries.py).
GO_PROBES = {
    gb.WRITE: ("go_rw", "go_ret_write"),
    gb.READ: ("go_rw", "go_ret_read"),
    gb.CLOSE: ("go_close", None),
    gb.CLIENT_HANDSHAKE: ("go_client_hs", None),
    gb.SERVER_HANDSHAKE: ("go_server_hs", None),
    gb.SERVER_NAME: (None, "go_ret_sni"),  # its result, on the goroutine clientHandshake noted
}
GO_TAILS = ("go_close", "go_client_hs", "go_server_hs")  # by TAIL_GO_* index
SHARED_RETURNS = sorted({fn for _, _, fn in PROBES if fn} | {fn for _, fn in GO_PROBES.values() if fn})

COUNTER_NAMES = [
    "records",
    "bytes",
    "dropped_records",
    "dropped_bytes",
    "truncated_bytes",
    "fault_bytes",
    "calls",
]


@dataclass
class AttachedLibrary:
    lib_id: int
    library: LibraryFile
    symbols: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    fd: int = -1  # held open: probes attach through /proc/self/fd, which outlives every process
    addresses: dict[str, int] = field(default_factory=dict)  # symbol -> address in the file
    # Go programs: every address probed, with the probe (entries and each RET instruction)
    go_probes: list[tuple[int, str]] = field(default_factory=list)

    @property
    def usable(self) -> bool:
        return not ESSENTIAL & set(self.missing)


def task_storage_supported(release: str | None = None) -> bool:
    """Task-local storage for tracing programs came with Linux 5.11."""
    parts = (release or platform.release()).split(".")
    try:
        return (int(parts[0]), int(parts[1].split("-")[0])) >= (5, 11)
    except (IndexError, ValueError):
        return False


def build_source(cfg: RecorderConfig, slots: int) -> str:
    defines = {
        "CHUNK_SIZE": cfg.chunk_size,
        "MAX_CHUNKS": cfg.max_chunks_per_call,
        "RINGBUF_PAGES": cfg.ringbuf_bytes // 4096,
        "CONN_MAP_SIZE": 131072,
        "RECORDER_PID": os.getpid(),
    }
    if task_storage_supported():
        defines["USE_TASK_STORAGE"] = 1
    head = "".join(f"#define {k} {v}\n" for k, v in defines.items())
    tail = "".join(f"DEFINE_PROBES({i})\n" for i in range(slots))
    return head + SOURCE.read_text() + "\n" + tail


class CaptureProgram:
    """The loaded BPF program: attach and detach library files, filter, read counters."""

    def __init__(self, bpf_cls, cfg: RecorderConfig):
        started = time.monotonic()
        self.slots = cfg.max_library_files
        self.bpf = bpf_cls(text=build_source(cfg, self.slots), cflags=[f"-I{BPF_DIR}", "-w"])
        log.info("compiled capture program in %.2f s (%d library slots)", time.monotonic() - started,
                 self.slots)
        self.cfg = cfg
        # the shared programs Go's per-slot entry stubs tail-call (bpf/tls_capture.c, go_tail)
        tails = self.bpf["go_tails"]
        for index, name in enumerate(GO_TAILS):
            tails[ctypes.c_int(index)] = ctypes.c_int(self.bpf.load_func(name, bpf_cls.KPROBE).fd)
        # Loaded now, not at the first file that needs them: verifying their chunk loop took 40 ms,
        # which a program attached after an exec would spend while it makes its first calls.
        for name in SHARED_RETURNS:
            self.bpf.load_func(name, bpf_cls.KPROBE)
        self.attached: dict[int, AttachedLibrary] = {}
        # Go programs with crypto/tls found but not probeable, by file (filled by discovery)
        self.unsupported_go: dict[tuple[int, int], str] = {}
        # Freed slots go to the back, so a slot's lib_id is reused as late as possible.
        self._free = list(range(self.slots))
        # Generations continue from the recorder's start time in microseconds, so a connection
        # key (pid, SSL*, generation) never repeats across recorder restarts on a node.
        self.gen_seed = time.time_ns() // 1000
        self.bpf["generation"][ctypes.c_int(0)] = ctypes.c_uint64(self.gen_seed)

    def attach(self, lib: LibraryFile) -> AttachedLibrary | None:
        """Probe one library file in a free slot; None when no slot is left or it cannot be opened."""
        if not self._free:
            log.debug("no free library slot for %s", lib.display_path)
            return None
        try:
            fd = os.open(lib.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:  # the process that showed it to us is gone
            log.debug("cannot open %s: %s", lib.path, exc)
            return None
        started = time.monotonic()
        lib_id = self._free.pop(0)
        item = AttachedLibrary(lib_id, lib, fd=fd)
        if lib.go is not None:
            self._attach_go(item)
        else:
            self._attach_openssl(item)
        self.attached[lib_id] = item
        if not item.usable:
            log.warning(
                "library %s (%s): essential symbols missing (%s): nothing will be captured from it",
                lib.display_path, lib.found_by, ", ".join(sorted(ESSENTIAL & set(item.missing))),
            )
        elif lib.go is not None:
            log.info("probed Go program %s (%s, %s, %s, inode %d, lib_id %d) in %.0f ms: %d probes on %s",
                     lib.display_path, lib.found_by, lib.go.go_version,
                     "stripped" if lib.go.stripped else "with symbols", lib.ino, lib_id,
                     (time.monotonic() - started) * 1000, len(item.go_probes), ", ".join(item.symbols))
        else:
            log.info(
                "probed %s (%s, inode %d, lib_id %d) in %.0f ms: %s%s",
                lib.display_path, lib.found_by, lib.ino, lib_id, (time.monotonic() - started) * 1000,
                ", ".join(item.symbols), f"; absent: {', '.join(item.missing)}" if item.missing else "",
            )
        return item

    def _attach_openssl(self, item: AttachedLibrary) -> None:
        path, lib_id = self._fd_path(item), item.lib_id
        # Addresses from the hash table: bcc would walk the whole symbol table once per probe,
        # which for node's 100 MB binary delays the attach by a second or more.
        item.addresses = exported_symbols(path, [p[0] for p in PROBES])
        for symbol, entry_fn, ret_fn in PROBES:
            where = {"addr": item.addresses[symbol]} if symbol in item.addresses else {"sym": symbol}
            try:
                self.bpf.attach_uprobe(name=path, fn_name=f"{entry_fn}_{lib_id}", **where)
                if ret_fn:
                    self.bpf.attach_uretprobe(name=path, fn_name=ret_fn, **where)
                item.symbols.append(symbol)
            except Exception as exc:  # bcc raises bare Exception for a missing symbol
                item.missing.append(symbol)
                log.debug("%s: %s not attached: %s", item.library.display_path, symbol, exc)

    def _attach_go(self, item: AttachedLibrary) -> None:
        """Uprobes at the entry of each crypto/tls function the program has, and at every RET of Read
        and Write. A function is used only if all its probes attached: an entry without its returns
        would leave calls in flight that never complete."""
        path, lib_id, go = self._fd_path(item), item.lib_id, item.library.go
        for name, (entry_fn, ret_fn) in GO_PROBES.items():
            function = go.functions.get(name)
            if function is None:
                item.missing.append(name)
                continue
            wanted = [(function.address, f"{entry_fn}_{lib_id}")] if entry_fn else []
            wanted += [(addr, ret_fn) for addr in function.return_addresses] if ret_fn else []
            done: list[tuple[int, str]] = []
            try:
                # returns first: a call must never be entered (state saved) with no return to take it
                for addr, fn in reversed(wanted):
                    self.bpf.attach_uprobe(name=path, addr=addr, fn_name=fn)
                    done.append((addr, fn))
            except Exception as exc:  # bcc raises bare Exception
                log.warning("%s: %s not probed: %s", item.library.display_path, name, exc)
                self._detach_addresses(path, done, item.library.display_path)
                item.missing.append(name)
                continue
            item.go_probes.extend(done)
            item.symbols.append(name)

    def _detach_addresses(self, path: str, probes: list[tuple[int, str]], display: str) -> None:
        for addr, _fn in probes:
            try:
                self.bpf.detach_uprobe(name=path, addr=addr)
            except Exception as exc:  # keep going: the slot is released either way
                log.warning("detaching %#x from %s failed: %s", addr, display, exc)

    def detach(self, lib_id: int) -> None:
        item = self.attached.pop(lib_id)
        path = self._fd_path(item)
        self._detach_addresses(path, item.go_probes, item.library.display_path)
        for symbol, _entry_fn, ret_fn in PROBES if item.library.go is None else ():
            if symbol not in item.symbols:
                continue
            where = {"addr": item.addresses[symbol]} if symbol in item.addresses else {"sym": symbol}
            try:
                self.bpf.detach_uprobe(name=path, **where)
                if ret_fn:
                    self.bpf.detach_uretprobe(name=path, **where)
            except Exception as exc:  # keep going: the slot is released either way
                log.warning("detaching %s from %s failed: %s", symbol, item.library.display_path, exc)
        os.close(item.fd)
        self._free.append(lib_id)
        log.info("detached %s (lib_id %d): no process maps it any more", item.library.display_path, lib_id)

    @property
    def free_slots(self) -> int:
        return len(self._free)

    @staticmethod
    def _fd_path(item: AttachedLibrary) -> str:
        return f"/proc/{os.getpid()}/fd/{item.fd}"

    def set_filters(self, pids: list[int], comms: list[str], cgroup_ids: list[int]) -> None:
        flags = 0
        one = ctypes.c_uint8(1)
        if pids:
            flags |= 1
            for pid in pids:
                self.bpf["pid_filter"][ctypes.c_uint32(pid)] = one
        if comms:
            flags |= 2
            table = self.bpf["comm_filter"]
            for comm in comms:
                key = table.Key()
                key.comm = comm.encode()[:15]
                table[key] = one
        if cgroup_ids:
            flags |= 4
            for cg in cgroup_ids:
                self.bpf["cgroup_filter"][ctypes.c_uint64(cg)] = one
        self.bpf["filter_flags"][ctypes.c_int(0)] = ctypes.c_uint32(flags)

    def counters(self) -> dict[str, int]:
        per_cpu = self.bpf["counters"][ctypes.c_int(0)]
        totals = {name: sum(int(c.v[i]) for c in per_cpu) for i, name in enumerate(COUNTER_NAMES)}
        attached = list(self.attached.values())  # discovery attaches meanwhile
        totals["go_programs_probed"] = sum(1 for a in attached if a.library.go is not None and a.usable)
        totals["go_programs_unsupported"] = len(self.unsupported_go)
        return totals

    def proc_events_fd(self) -> int:
        return self.bpf["proc_events"].map_fd

    def open_ring_buffer(self, callback) -> None:
        self.bpf["records"].open_ring_buffer(callback)

    def ring_buffer_fd(self) -> int:
        return self.bpf["records"].map_fd

    def drain(self) -> None:
        """Consume every record in the ring buffer (records never wake us: BPF_RB_NO_WAKEUP)."""
        self.bpf.ring_buffer_consume()

    def close(self) -> None:
        self.bpf.cleanup()
        for item in self.attached.values():
            os.close(item.fd)
        self.attached.clear()
