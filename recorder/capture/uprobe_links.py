"""Attach a loaded BPF program to instructions of a file, with a cookie: the kernel's own API, not
bcc's.

bcc attaches a program to a uprobe through a perf event with no cookie, so a program cannot tell
which of several files it fired in; the recorder used to compile one copy of its entry programs per
"library slot" (a fixed number of files). A perf-event BPF link (`BPF_LINK_CREATE`, Linux 5.15)
carries a 64-bit cookie the program reads with `bpf_get_attach_cookie()`: one program serves every
file, each probe names its file, and attaching a file takes a few system calls per probe at file
offsets the recorder computed, with no compile and no ELF parsing by bcc.

Two kinds of link. A uprobe-multi link (Linux 6.6) covers any number of offsets of one file with one
program and one fd, needs no perf event, and is released without the global lock perf events take:
closing 200 of them took 0.2 s here against 200 ms each for perf-event links, which the kernel
releases one at a time, each waiting out an RCU grace period. A perf-event link (5.15) serves older
kernels: its uprobe's perf event comes from the uprobe PMU, or, where the kernel requires CAP_SYS_ADMIN for
that PMU (Linux since 2025) and the recorder runs without it, from a uprobe event written into
tracefs's `uprobe_events` (group `oisp_<recorder pid>`, removed at detach; a killed recorder's are
removed by the next one). A link holds its perf event: the event's fd is closed at once, so a probe
costs one fd, the link's, closed to detach it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_libc.syscall.restype = ctypes.c_long

# perf_event_open(2) and bpf(2) by architecture
PERF_EVENT_OPEN = {"x86_64": 298, "aarch64": 241}
BPF_SYSCALL = {"x86_64": 321, "aarch64": 280}
BPF_LINK_CREATE = 28
BPF_PERF_EVENT = 41
BPF_TRACE_UPROBE_MULTI = 48  # also the programs' expected attach type for such links
BPF_F_UPROBE_MULTI_RETURN = 1
PERF_TYPE_TRACEPOINT = 2
PERF_FLAG_FD_CLOEXEC = 1 << 3
PERF_EVENT_IOC_ENABLE = 0x2400
UPROBE_PMU = Path("/sys/bus/event_source/devices/uprobe")
RETPROBE_BIT = 1  # the uprobe PMU's format/retprobe: config:0
TRACEFS_DIRS = (Path("/sys/kernel/tracing"), Path("/sys/kernel/debug/tracing"))
GROUP_PREFIX = "oisp_"


class LinkError(OSError):
    """The kernel refused a probe (its errno and what was being done)."""


class PerfEventAttr(ctypes.Structure):
    # struct perf_event_attr up to config2, zero-padded to PERF_ATTR_SIZE_VER5 (112 bytes)
    _fields_ = [
        ("type", ctypes.c_uint32), ("size", ctypes.c_uint32), ("config", ctypes.c_uint64),
        ("sample_period", ctypes.c_uint64), ("sample_type", ctypes.c_uint64),
        ("read_format", ctypes.c_uint64), ("flags", ctypes.c_uint64), ("wakeup_events", ctypes.c_uint32),
        ("bp_type", ctypes.c_uint32), ("config1", ctypes.c_uint64), ("config2", ctypes.c_uint64),
        ("_rest", ctypes.c_uint8 * 48),
    ]


class _LinkCreateAttr(ctypes.Structure):
    # union bpf_attr's link_create: prog_fd, target_fd, attach_type, flags, perf_event.bpf_cookie
    _fields_ = [
        ("prog_fd", ctypes.c_uint32), ("target_fd", ctypes.c_uint32), ("attach_type", ctypes.c_uint32),
        ("flags", ctypes.c_uint32), ("bpf_cookie", ctypes.c_uint64), ("_rest", ctypes.c_uint8 * 40),
    ]


class _UprobeMultiAttr(ctypes.Structure):
    # link_create with its uprobe_multi member: path, offsets, ref_ctr_offsets, cookies, cnt, flags, pid
    _fields_ = [
        ("prog_fd", ctypes.c_uint32), ("target_fd", ctypes.c_uint32), ("attach_type", ctypes.c_uint32),
        ("flags", ctypes.c_uint32), ("path", ctypes.c_uint64), ("offsets", ctypes.c_uint64),
        ("ref_ctr_offsets", ctypes.c_uint64), ("cookies", ctypes.c_uint64), ("cnt", ctypes.c_uint32),
        ("multi_flags", ctypes.c_uint32), ("pid", ctypes.c_uint32), ("_rest", ctypes.c_uint8 * 20),
    ]


def _nr(table: dict[str, int]) -> int:
    machine = platform.machine()
    if machine not in table:
        raise LinkError(0, f"no system call number for {machine}")
    return table[machine]


def bpf(cmd: int, attr: ctypes.Structure) -> int:
    """The bpf(2) system call; -1 with errno set on failure."""
    return _libc.syscall(_nr(BPF_SYSCALL), cmd, ctypes.byref(attr), ctypes.sizeof(attr))


def _fail(what: str) -> LinkError:
    errno = ctypes.get_errno()
    return LinkError(errno, f"{what}: {os.strerror(errno)}")


def perf_event_open(attr: PerfEventAttr) -> int:
    """A perf event of every process (pid -1) on cpu 0, as bcc opens uprobes; -1 with errno set."""
    return _libc.syscall(_nr(PERF_EVENT_OPEN), ctypes.byref(attr), -1, 0, -1, PERF_FLAG_FD_CLOEXEC)


def pmu_usable() -> bool:
    """Whether the kernel lets this process create uprobes through the uprobe PMU. Linux requires
    CAP_SYS_ADMIN for it again since 2025 ("perf: Require CAP_SYS_ADMIN for uprobes"; CAP_PERFMON was
    enough from 5.8), so this is asked of the kernel, not guessed. The probe is on a memfd no process
    maps, opened disabled and closed at once: nothing is patched."""
    try:
        pmu_type = int((UPROBE_PMU / "type").read_text())
        memfd = os.memfd_create("oisp-uprobe-check", os.MFD_CLOEXEC)
    except (OSError, ValueError, AttributeError):
        return False
    try:
        os.write(memfd, b"\xc3" * 16)  # ret instructions: a valid place for a probe
        path = ctypes.create_string_buffer(f"/proc/self/fd/{memfd}".encode())
        attr = PerfEventAttr(type=pmu_type, size=ctypes.sizeof(PerfEventAttr), flags=1,  # disabled
                             config1=ctypes.addressof(path), config2=0)
        fd = perf_event_open(attr)
        if fd < 0:
            return False
        os.close(fd)
        return True
    except LinkError:
        return False
    finally:
        os.close(memfd)


@dataclass(frozen=True)
class Link:
    fd: int
    event: str | None = None  # the tracefs uprobe event behind it ("group/name"), if any


class UprobeEvents:
    """Opens the perf event of a uprobe: from the uprobe PMU when the kernel allows it, else from a
    uprobe event written into tracefs."""

    def __init__(self) -> None:
        self.pmu_type = int((UPROBE_PMU / "type").read_text()) if pmu_usable() else None
        self.tracefs = None if self.pmu_type is not None else next(
            (d for d in TRACEFS_DIRS if (d / "uprobe_events").exists()), None)
        if self.pmu_type is None and self.tracefs is None:
            raise LinkError(0, "neither the uprobe PMU nor tracefs's uprobe_events can be used")
        self.group = f"{GROUP_PREFIX}{os.getpid()}"
        self._count = 0
        if self.tracefs is not None:
            remove_stale_events(self.tracefs)

    def open(self, path: str, offset: int, retprobe: bool) -> tuple[int, str | None]:
        """(perf event fd, tracefs event name or None)."""
        if self.pmu_type is not None:
            name = ctypes.create_string_buffer(path.encode())
            attr = PerfEventAttr(type=self.pmu_type, size=ctypes.sizeof(PerfEventAttr),
                                 config=RETPROBE_BIT if retprobe else 0, sample_period=1, wakeup_events=1,
                                 config1=ctypes.addressof(name), config2=offset)
            fd = perf_event_open(attr)
            if fd < 0:
                raise _fail(f"uprobe at {path}+{offset:#x}")
            return fd, None
        self._count += 1
        event = f"{self.group}/p{self._count}"
        _write_events(self.tracefs, f"{'r' if retprobe else 'p'}:{event} {path}:{offset:#x}")
        try:
            event_id = int((self.tracefs / "events" / event / "id").read_text())
            attr = PerfEventAttr(type=PERF_TYPE_TRACEPOINT, size=ctypes.sizeof(PerfEventAttr),
                                 config=event_id, sample_period=1, wakeup_events=1)
            fd = perf_event_open(attr)
            if fd < 0:
                raise _fail(f"uprobe event {event} at {path}+{offset:#x}")
        except (OSError, ValueError):
            self.remove(event)
            raise
        return fd, event

    def remove(self, event: str) -> None:
        try:
            _write_events(self.tracefs, f"-:{event}")
        except OSError:
            pass  # already gone, or still held: the next recorder's start removes it


def _write_events(tracefs: Path, line: str) -> None:
    # O_APPEND, never O_TRUNC: truncating uprobe_events deletes every uprobe event on the machine
    fd = os.open(tracefs / "uprobe_events", os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
    try:
        os.write(fd, line.encode() + b"\n")
    finally:
        os.close(fd)


def remove_stale_events(tracefs: Path) -> int:
    """Remove the uprobe events of recorders that are gone (killed before they could); how many."""
    try:
        lines = (tracefs / "uprobe_events").read_text().splitlines()
    except OSError:
        return 0
    removed = 0
    for line in lines:
        m = re.match(rf"^[pr]:({GROUP_PREFIX}(\d+)/\S+)", line)
        if m and not Path(f"/proc/{m.group(2)}").exists():
            try:
                _write_events(tracefs, f"-:{m.group(1)}")
                removed += 1
            except OSError:
                pass
    return removed


def attach(prog_fd: int, events: UprobeEvents, path: str, offset: int, cookie: int,
           retprobe: bool = False) -> Link:
    """Run the program at file `offset` of `path` in every process, now and later (a uretprobe: when
    the function there returns), its BPF cookie `cookie`."""
    perf_fd, event = events.open(path, offset, retprobe)
    error = None
    attr = _LinkCreateAttr(prog_fd=prog_fd, target_fd=perf_fd, attach_type=BPF_PERF_EVENT, bpf_cookie=cookie)
    link_fd = bpf(BPF_LINK_CREATE, attr)
    if link_fd < 0:
        error = _fail(f"BPF link at {path}+{offset:#x}")
    elif _libc.ioctl(perf_fd, PERF_EVENT_IOC_ENABLE, 0) < 0:
        error = _fail(f"enabling the uprobe at {path}+{offset:#x}")
        os.close(link_fd)
    os.close(perf_fd)  # a link holds its event
    if error is not None:
        if event is not None:
            events.remove(event)
        raise error
    return Link(link_fd, event)


def attach_multi(prog_fd: int, path: str, offsets: list[int], cookie: int, retprobe: bool = False) -> Link:
    """One uprobe-multi link running the program at each of `offsets` of `path` (at the return of the
    function there, with `retprobe`), every probe's cookie `cookie`."""
    name = ctypes.create_string_buffer(path.encode())
    offs = (ctypes.c_uint64 * len(offsets))(*offsets)
    cookies = (ctypes.c_uint64 * len(offsets))(*([cookie] * len(offsets)))
    attr = _UprobeMultiAttr(prog_fd=prog_fd, attach_type=BPF_TRACE_UPROBE_MULTI,
                            path=ctypes.addressof(name), offsets=ctypes.addressof(offs),
                            cookies=ctypes.addressof(cookies), cnt=len(offsets),
                            multi_flags=BPF_F_UPROBE_MULTI_RETURN if retprobe else 0)
    fd = bpf(BPF_LINK_CREATE, attr)
    if fd < 0:
        raise _fail(f"uprobe-multi link at {path}+{','.join(hex(o) for o in offsets)}")
    return Link(fd)


def detach(link: Link, events: UprobeEvents | None) -> None:
    os.close(link.fd)
    if link.event is not None and events is not None:
        events.remove(link.event)


def detach_all(links: list[Link], events: UprobeEvents | None) -> None:
    """Close many links at once: closes in parallel share the kernel's grace periods (uprobe-multi)."""
    if len(links) < 4:
        for link in links:
            detach(link, events)
        return
    with ThreadPoolExecutor(max_workers=min(64, len(links))) as pool:
        list(pool.map(lambda link: detach(link, events), links))
