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

from .config import RecorderConfig
from .libraries import LibraryFile

log = logging.getLogger("oisp.record")

BPF_DIR = Path(os.environ.get("OISP_BPF_DIR", Path(__file__).resolve().parent.parent / "bpf"))
SOURCE = BPF_DIR / "tls_capture.c"

# (symbol, entry function prefix, return function prefix or None). The return probe reads what
# the call really moved; handshake functions and SSL_free only need their entry.
PROBES = [
    ("SSL_write", "entry_write", "ret_write"),
    ("SSL_write_ex", "entry_write_ex", "ret_write_ex"),
    ("SSL_read", "entry_read", "ret_read"),
    ("SSL_read_ex", "entry_read_ex", "ret_read_ex"),
    ("SSL_do_handshake", "entry_do_handshake", None),
    ("SSL_connect", "entry_connect", None),
    ("SSL_accept", "entry_accept", None),
    ("SSL_free", "entry_free", None),
]
# Without these a library is useless to us: nothing would be captured.
ESSENTIAL = {"SSL_write", "SSL_read"}

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


def task_storage_supported(release: str | None = None) -> bool:
    """Task-local storage for tracing programs came with Linux 5.11."""
    parts = (release or platform.release()).split(".")
    try:
        return (int(parts[0]), int(parts[1].split("-")[0])) >= (5, 11)
    except (IndexError, ValueError):
        return False


def build_source(cfg: RecorderConfig, lib_count: int) -> str:
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
    tail = "".join(f"DEFINE_PROBES({i})\n" for i in range(lib_count))
    return head + SOURCE.read_text() + "\n" + tail


class CaptureProgram:
    """The loaded BPF program: attach, filter, read counters."""

    def __init__(self, bpf_cls, cfg: RecorderConfig, libraries: list[LibraryFile]):
        started = time.monotonic()
        self.bpf = bpf_cls(text=build_source(cfg, len(libraries)), cflags=[f"-I{BPF_DIR}", "-w"])
        log.info("compiled capture program in %.2f s", time.monotonic() - started)
        self.cfg = cfg
        self.libraries = libraries
        self.attached: list[AttachedLibrary] = []
        # Generations continue from the recorder's start time in microseconds, so a connection
        # key (pid, SSL*, generation) never repeats across recorder restarts on a node.
        self.gen_seed = time.time_ns() // 1000
        self.bpf["generation"][ctypes.c_int(0)] = ctypes.c_uint64(self.gen_seed)

    def attach_all(self) -> list[AttachedLibrary]:
        for lib_id, lib in enumerate(self.libraries):
            item = AttachedLibrary(lib_id, lib)
            for symbol, entry_fn, ret_fn in PROBES:
                try:
                    self.bpf.attach_uprobe(name=lib.path, sym=symbol, fn_name=f"{entry_fn}_{lib_id}")
                    if ret_fn:
                        self.bpf.attach_uretprobe(name=lib.path, sym=symbol, fn_name=f"{ret_fn}_{lib_id}")
                    item.symbols.append(symbol)
                except Exception as exc:  # bcc raises bare Exception for a missing symbol
                    item.missing.append(symbol)
                    log.debug("%s: %s not attached: %s", lib.display_path, symbol, exc)
            if ESSENTIAL & set(item.missing):
                log.warning(
                    "library %s (%s): essential symbols missing (%s): nothing will be captured from it",
                    lib.display_path, lib.found_by, ", ".join(sorted(ESSENTIAL & set(item.missing))),
                )
            else:
                log.info(
                    "probed %s (%s, inode %d): %s%s",
                    lib.display_path, lib.found_by, lib.ino, ", ".join(item.symbols),
                    f"; absent: {', '.join(item.missing)}" if item.missing else "",
                )
            self.attached.append(item)
        return self.attached

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
        return {name: sum(int(c.v[i]) for c in per_cpu) for i, name in enumerate(COUNTER_NAMES)}

    def open_ring_buffer(self, callback) -> None:
        self.bpf["records"].open_ring_buffer(callback)

    def ring_buffer_fd(self) -> int:
        return self.bpf["records"].map_fd

    def drain(self) -> None:
        """Consume every record in the ring buffer (records never wake us: BPF_RB_NO_WAKEUP)."""
        self.bpf.ring_buffer_consume()

    def close(self) -> None:
        self.bpf.cleanup()
