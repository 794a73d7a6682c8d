"""Resuming processes the capture program held at a file not judged yet (bpf/tls_capture.c, hold_at).

The BPF program stops such a process (SIGSTOP) and notes it in its held_pids map; discovery judges
and probes the file, then resumes the process (SIGCONT). A process must never stay stopped because
the recorder died in between (OOM-killed, SIGKILL): a watchdog process, started with the map's fd
and the read end of a pipe whose write end only the recorder holds, waits for that pipe to close,
which the kernel does however the recorder ends, and resumes every process still in the map.

The watchdog is `python -m recorder.capture.holds PIPE_FD MAP_FD`: a process of its own, not a fork
of the recorder (whose threads may hold locks a forked child would wait on forever).
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time

from recorder.capture import uprobe_links

BPF_MAP_GET_NEXT_KEY = 4
STOP_WAIT_SECONDS = 0.2


class _MapKeyAttr(ctypes.Structure):
    _fields_ = [("map_fd", ctypes.c_uint32), ("pad", ctypes.c_uint32), ("key", ctypes.c_uint64),
                ("next_key", ctypes.c_uint64), ("flags", ctypes.c_uint64)]


def map_pids(map_fd: int) -> list[int]:
    """The keys (u32 pids) of a BPF hash map, by its fd."""
    pids: list[int] = []
    current, following = ctypes.c_uint32(0), ctypes.c_uint32(0)
    attr = _MapKeyAttr(map_fd=map_fd, key=0, next_key=ctypes.addressof(following))
    for _ in range(1 << 16):
        if uprobe_links.bpf(BPF_MAP_GET_NEXT_KEY, attr) != 0:
            break  # ENOENT: the last key
        pids.append(following.value)
        current.value = following.value
        attr.key = ctypes.addressof(current)
    return pids


def resume(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGCONT)
    except (ProcessLookupError, PermissionError):
        pass  # gone


def thread_state(pid: int, tid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/task/{tid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    return stat[stat.rfind(b")") + 2:][:1].decode()  # the comm in parentheses may hold anything


def wait_stopped(pid: int, tid: int, timeout: float = STOP_WAIT_SECONDS) -> bool:
    """Wait until the held thread has stopped: the stop comes when its syscall returns, so only then is
    the mapping it was making in its maps. False if it exited or did not stop in time."""
    deadline = time.monotonic() + timeout
    while True:
        state = thread_state(pid, tid)
        if state in ("T", "t"):
            return True
        if state is None or state in ("Z", "X") or time.monotonic() > deadline:
            return False
        time.sleep(0.0002)  # the stop is microseconds away: it follows the syscall's return


def start_watchdog(map_fd: int) -> tuple[subprocess.Popen, int]:
    """Start the watchdog; returns it and the pipe's write end, to keep open while recording."""
    read_end, write_end = os.pipe()
    os.set_inheritable(map_fd, True)
    watchdog = subprocess.Popen([sys.executable, "-m", "recorder.capture.holds", str(read_end), str(map_fd)],
                                pass_fds=(read_end, map_fd), start_new_session=True,
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    os.close(read_end)
    os.set_inheritable(map_fd, False)
    return watchdog, write_end


def watch(pipe_fd: int, map_fd: int) -> int:
    """Wait for the recorder to end (EOF), then resume whoever it still held. Returns how many."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)  # outlive whatever ends the recorder
    while os.read(pipe_fd, 4096):
        pass
    pids = map_pids(map_fd)
    for pid in pids:
        resume(pid)
    return len(pids)


if __name__ == "__main__":
    released = watch(int(sys.argv[1]), int(sys.argv[2]))
    if released:
        print(f"oisp-record watchdog: resumed {released} held process(es) the recorder left", file=sys.stderr)
