"""Compile the capture program with bcc, attach its uprobes to each library file, set filters.

The BPF C lives in bpf/; this module adds the build-time constants and the entry probes: one set
whose BPF cookie names the file (BPF links, Linux 5.15+), or one set per library slot on older
kernels (attachers.py), so every record names the library it came from.
"""

from __future__ import annotations

import ctypes
import functools
import ipaddress
import logging
import os
import platform
import resource
import time
from pathlib import Path

from recorder.capture import holds, kernel_btf, preflight
from recorder.capture.attachers import (
    ENTRY_PROGRAMS,
    ESSENTIAL,
    GO_TAILS,
    LINK_SUFFIX,
    SHARED_RETURNS,
    AttachedLibrary,
    LinkAttacher,
    SlotAttacher,
)
from recorder.capture.libraries import LibraryFile
from recorder.config import RecorderConfig

log = logging.getLogger("oisp.record")

BPF_DIR = Path(os.environ.get("OISP_BPF_DIR", Path(__file__).resolve().parents[2] / "bpf"))
SOURCE = BPF_DIR / "tls_capture.c"
# Without BPF links each file takes a slot of entry programs compiled at start (0.1 s each).
MAX_COMPILED_SLOTS = 64

COUNTER_NAMES = [
    "records",
    "bytes",
    "dropped_records",
    "dropped_bytes",
    "truncated_bytes",
    "fault_bytes",
    "calls",
]
__all__ = ["ESSENTIAL", "AttachedLibrary", "CaptureProgram", "build_source"]


def _kernel_at_least(version: tuple[int, int], release: str | None = None) -> bool:
    parts = (release or platform.release()).split(".")
    try:
        return (int(parts[0]), int(parts[1].split("-")[0])) >= version
    except (IndexError, ValueError):
        return False


def attach_mode(cfg: RecorderConfig, release: str | None = None) -> str:
    """multi, links or slots: uprobe-multi links came with Linux 6.6, BPF cookies on perf-event links
    (bpf_get_attach_cookie for uprobes) with 5.15."""
    if cfg.attach_mode != "auto":
        return cfg.attach_mode
    if _kernel_at_least((6, 6), release):
        return "multi"
    return "links" if _kernel_at_least((5, 15), release) else "slots"


def plaintext_hooks(cfg: RecorderConfig, release: str | None = None) -> str:
    """socket or syscalls: the socket layer's sock_send_length/sock_recv_length tracepoints came with
    Linux 6.3 (bpf_task_pt_regs, to read the call's arguments there, with 5.15)."""
    if cfg.plaintext_hooks != "auto":
        return cfg.plaintext_hooks
    return "socket" if _kernel_at_least((6, 3), release) else "syscalls"


def task_storage_supported(release: str | None = None) -> bool:
    """Task-local storage for tracing programs came with Linux 5.11."""
    return _kernel_at_least((5, 11), release)


# The kernel structure members the hold code follows (bpf/tls_capture.c, hold_at).
HOLD_MEMBERS = {"task_struct": ["mm", "real_parent", "tgid", "files", "signal"], "mm_struct": ["exe_file"],
                "signal_struct": ["tty"],
                "file": ["f_inode"], "inode": ["i_ino", "i_size"], "files_struct": ["fdt"],
                "fdtable": ["max_fds", "fd"]}
# ... and those the plaintext capture follows (fd -> file -> socket -> sock: both ends of a connection)
PLAIN_MEMBERS = {"task_struct": ["files"], "files_struct": ["fdt"], "fdtable": ["max_fds", "fd"],
                 "file": ["private_data"], "socket": ["sk"], "sock": ["__sk_common"],
                 "sock_common": ["skc_family", "skc_dport", "skc_num", "skc_daddr", "skc_rcv_saddr",
                                 "skc_v6_daddr", "skc_v6_rcv_saddr"]}


def holds_supported(cfg: RecorderConfig, release: str | None = None) -> bool:
    """Whether processes are held at files not judged yet: configured, with discovery running to
    release them, and bpf_send_signal (Linux 5.3)."""
    return cfg.hold_new_files and cfg.discover_libraries and _kernel_at_least((5, 3), release)


def _can_resume_anyone() -> bool:
    """CAP_KILL: resuming (SIGCONT) a process of another user needs it, and a process held must be
    resumed whoever runs it."""
    return bool(preflight.effective_capabilities() >> preflight.CAP_KILL & 1)


@functools.cache
def _btf_offsets(members: tuple[tuple[str, tuple[str, ...]], ...]) -> dict[str, int] | str:
    try:
        found = kernel_btf.member_offsets({name: list(fields) for name, fields in members})
    except kernel_btf.BtfError as exc:
        return str(exc)
    return {f"OFF_{s.upper()}_{m.upper()}": off for (s, m), off in found.items()}


def _offsets(members: dict[str, list[str]]) -> dict[str, int] | str:
    return _btf_offsets(tuple((name, tuple(fields)) for name, fields in sorted(members.items())))


def hold_offsets(cfg: RecorderConfig) -> dict[str, int]:
    """The OFF_* defines of the hold code, or none when processes are not held (said once why)."""
    if not holds_supported(cfg):
        return {}
    offsets = _offsets(HOLD_MEMBERS)
    why = offsets if isinstance(offsets, str) else None
    if why is None and not _can_resume_anyone():
        why = "CAP_KILL is missing (to resume processes of other users)"
    if why is not None:
        _warn_once(f"processes are not held at new files (hold_new_files): {why}; a program's first "
                   "TLS calls may come before its file is probed")
        return {}
    return offsets


def plain_offsets(cfg: RecorderConfig) -> dict[str, int]:
    """The OFF_* defines of the plaintext capture, or none when it is off (said once why)."""
    if not cfg.plaintext_capture or not cfg.plaintext_ports:
        return {}
    offsets = _offsets(PLAIN_MEMBERS)
    if isinstance(offsets, str):
        _warn_once(f"plaintext HTTP is not captured (plaintext_capture): the kernel's BTF is needed and "
                   f"{offsets}")
        return {}
    return offsets


@functools.cache
def _warn_once(message: str) -> None:
    log.warning("%s", message)


def build_source(cfg: RecorderConfig, slots: int | None) -> str:
    """The program's source; `slots` None: one set of entry probes told apart by their cookies."""
    defines = {
        "CHUNK_SIZE": cfg.chunk_size,
        "MAX_CHUNKS": cfg.max_chunks_per_call,
        "RINGBUF_PAGES": cfg.ringbuf_bytes // 4096,
        "CONN_MAP_SIZE": 131072,
        "RECORDER_PID": os.getpid(),
    }
    if task_storage_supported():
        defines["USE_TASK_STORAGE"] = 1
    if slots is None:
        defines["USE_ATTACH_COOKIE"] = 1
    offsets = hold_offsets(cfg)
    if offsets:
        defines["HOLD_NEW_FILES"] = 1
        defines.update(offsets)
    offsets = plain_offsets(cfg)
    if offsets:
        defines["PLAIN_CAPTURE"] = 1
        if plaintext_hooks(cfg) == "socket":
            defines["PLAIN_SOCKET_TRACEPOINTS"] = 1
        defines.update(offsets)
    head = "".join(f"#define {k} {v}\n" for k, v in defines.items())
    tail = f"DEFINE_PROBES({LINK_SUFFIX})\n" if slots is None else "".join(
        f"DEFINE_PROBES({i})\n" for i in range(slots))
    return head + SOURCE.read_text() + "\n" + tail


class CaptureProgram:
    """The loaded BPF program: attach and detach library files, filter, read counters."""

    def __init__(self, bpf_cls, cfg: RecorderConfig):
        started = time.monotonic()
        self.mode = attach_mode(cfg)
        self.links = self.mode != "slots"
        slots = None if self.links else min(cfg.max_library_files, MAX_COMPILED_SLOTS)
        self.bpf = bpf_cls(text=build_source(cfg, slots), cflags=[f"-I{BPF_DIR}", "-w"])
        self.slots = cfg.max_library_files if self.links else slots  # files probed at once, at most
        how = {"multi": "uprobe-multi BPF links", "links": "perf-event BPF links"}.get(
            self.mode, f"{slots} library slots, no BPF links (kernel {platform.release()})")
        log.info("compiled capture program in %.2f s (%s)", time.monotonic() - started, how)
        self.cfg = cfg
        self.holding = bool(hold_offsets(cfg))  # the program holds processes at files not judged yet
        self.processes_held = 0  # counted by discovery
        self.plaintext = bool(plain_offsets(cfg))
        if self.plaintext:
            self._scope_plaintext(bpf_cls, cfg)
        self.holds_expired = 0
        if self.links:
            self.attacher: LinkAttacher | SlotAttacher = LinkAttacher(self.bpf, bpf_cls.KPROBE,
                                                                      self.mode == "multi")
            # Loaded now, not at the first file that needs them: verifying the return programs' chunk
            # loop took 40 ms, which a program attached after an exec would spend making its first calls.
            for name in SHARED_RETURNS + [f"{p}_{LINK_SUFFIX}" for p in ENTRY_PROGRAMS]:
                self.attacher.program_fd(name)
        else:
            self.attacher = SlotAttacher(self.bpf)
            # the shared programs the Go entry stubs of each slot tail-call (bpf/tls_capture.c, go_tail)
            tails = self.bpf["go_tails"]
            for index, name in enumerate(GO_TAILS):
                tails[ctypes.c_int(index)] = ctypes.c_int(self.bpf.load_func(name, bpf_cls.KPROBE).fd)
            for name in SHARED_RETURNS:
                self.bpf.load_func(name, bpf_cls.KPROBE)
        self.attached: dict[int, AttachedLibrary] = {}
        # files with TLS code found but not probeable, by file (filled by discovery): Go programs, others
        self.unsupported_go: dict[tuple[int, int], str] = {}
        self.unsupported_other: dict[tuple[int, int], str] = {}
        # Freed ids go to the back, so a lib_id is reused as late as possible.
        self._free = list(range(self.slots))
        # Generations continue from the recorder's start time in microseconds, so a connection
        # key (pid, SSL*, generation) never repeats across recorder restarts on a node.
        self.gen_seed = time.time_ns() // 1000
        self.bpf["generation"][ctypes.c_int(0)] = ctypes.c_uint64(self.gen_seed)

    def attach(self, lib: LibraryFile) -> AttachedLibrary | None:
        """Probe one library file under a free lib_id; None when none is left or it cannot be opened."""
        if not self._free:
            log.debug("no free library slot for %s", lib.display_path)
            return None
        try:
            fd = os.open(lib.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:  # the process that showed it to us is gone
            log.debug("cannot open %s: %s", lib.path, exc)
            return None
        started = time.monotonic()
        item = AttachedLibrary(self._free.pop(0), lib, fd=fd)
        if lib.go is not None:
            self.attacher.attach_go(item)
        else:
            self.attacher.attach_openssl(item)
        self.attached[item.lib_id] = item
        _log_attached(item, (time.monotonic() - started) * 1000)
        return item

    def detach(self, lib_id: int) -> None:
        item = self.attached.pop(lib_id)
        self.attacher.detach(item)
        os.close(item.fd)
        self._free.append(lib_id)
        log.info("detached %s (lib_id %d): no process maps it any more", item.library.display_path, lib_id)

    @property
    def free_slots(self) -> int:
        return len(self._free)

    def _scope_plaintext(self, bpf_cls, cfg: RecorderConfig) -> None:
        """The ports and server addresses whose plaintext HTTP is captured, and the copying program
        the system call exits tail-call (bpf/tls_capture.c, PLAIN_CAPTURE)."""
        ports = self.bpf["plain_ports"]
        for port in cfg.plaintext_ports:
            ports[ctypes.c_uint16(port)] = ctypes.c_uint8(1)
        prefixes = self.bpf["plain_addresses"]
        for network in cfg.plaintext_networks():
            key = prefixes.Key()
            mapped = network if network.version == 6 else ipaddress.IPv6Network(
                f"::ffff:{network.network_address}/{96 + network.prefixlen}")
            key.prefixlen = mapped.prefixlen
            key.addr = (ctypes.c_uint8 * 16)(*mapped.network_address.packed)
            prefixes[key] = ctypes.c_uint8(1)
        if cfg.plaintext_addresses:
            self.bpf["plain_flags"][ctypes.c_int(0)] = ctypes.c_uint32(1)
        self.bpf["plain_tail"][ctypes.c_int(0)] = ctypes.c_int(
            self.bpf.load_func("plain_copy", bpf_cls.RAW_TRACEPOINT).fd)
        log.info("plaintext HTTP captured on ports %s%s (hooks: %s)",
                 ", ".join(map(str, cfg.plaintext_ports)),
                 f" of {', '.join(cfg.plaintext_addresses)}" if cfg.plaintext_addresses else "",
                 plaintext_hooks(cfg))

    def hold_new_files(self, enabled: bool) -> None:
        """Start (or stop) holding processes at files not judged yet (bpf/tls_capture.c, hold_at)."""
        self.bpf["hold_enabled"][ctypes.c_int(0)] = ctypes.c_uint32(1 if enabled else 0)

    def mark_judged(self, files: list[tuple[int, int]]) -> None:
        """Files (inode, size) judged: processes are no longer held at them."""
        if not files or not self.holding:
            return
        table = self.bpf["judged_files"]
        one = ctypes.c_uint8(1)
        for ino, size in files:
            key = table.Key()
            key.ino, key.size = ino, size
            table[key] = one

    def held_map_fd(self) -> int:
        return self.bpf["held_pids"].map_fd

    def held_pids(self) -> dict[int, int]:
        """pid -> when it was held (bpf_ktime_get_ns, CLOCK_MONOTONIC)."""
        return {k.value: v.value for k, v in self.bpf["held_pids"].items()}

    def resume(self, pid: int) -> None:
        """Resume a process the program held (SIGCONT) and forget it."""
        holds.resume(pid)
        try:
            del self.bpf["held_pids"][ctypes.c_uint32(pid)]
        except KeyError:
            pass

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
        totals["tls_files_unsupported"] = len(self.unsupported_go) + len(self.unsupported_other)
        totals["processes_held"] = self.processes_held
        totals["holds_expired"] = self.holds_expired
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
        if self.links:
            self.attacher.detach_many(list(self.attached.values()))
        self.bpf.cleanup()  # bcc's own probes (slots) and the programs
        for item in self.attached.values():
            os.close(item.fd)
        self.attached.clear()


def _log_attached(item: AttachedLibrary, ms: float) -> None:
    lib = item.library
    if not item.usable:
        log.warning("library %s (%s): essential symbols missing (%s): nothing will be captured from it",
                    lib.display_path, lib.found_by, ", ".join(sorted(ESSENTIAL & set(item.missing))))
    elif lib.go is not None:
        log.info("probed Go program %s (%s, %s, %s, inode %d, lib_id %d) in %.0f ms: %d probes on %s",
                 lib.display_path, lib.found_by, lib.go.go_version,
                 "stripped" if lib.go.stripped else "with symbols", lib.ino, item.lib_id, ms,
                 item.probe_count, ", ".join(item.symbols))
    else:
        log.info("probed %s (%s, inode %d, lib_id %d) in %.0f ms: %s%s", lib.display_path, lib.found_by,
                 lib.ino, item.lib_id, ms, ", ".join(item.symbols),
                 f"; absent: {', '.join(item.missing)}" if item.missing else "")


def raise_open_files_limit() -> int:
    """Raise the soft limit on open files to the hard one: each probe is a BPF link's fd (about 20 a
    file). Returns the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard
