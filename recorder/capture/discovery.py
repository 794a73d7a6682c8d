"""Keep the probes on every TLS library file in use on the node, as processes come and go.

Uprobes attach to a file (its inode), not to a process: once a libssl is probed, every process that
maps it, now or later, is captured. What needs watching is new *files*: a container started from a
new image brings its own libssl, a new program may carry OpenSSL statically. So:
- at start, every process's mappings are scanned (through /proc/PID/root, into containers);
- on every exec (tracepoint, read from the proc_events ring buffer) the new process is checked at
  once (its program may carry OpenSSL) and again over the next seconds;
- Go programs are TLS libraries of their own (crypto/tls is compiled in): a process's program is
  looked at like any file it maps, so a Go program is probed at its exec, before its first call;
- when a process opens a file named libssl.so.* (openat tracepoint), that file is probed at once
  from its path, before the loader has even mapped it: libssl is often dlopen()ed well after exec
  (Python loads it at `import ssl`) and the first TLS write may follow within milliseconds;
- a full rescan runs every `rescan_interval_seconds`; files no process maps any more are detached,
  oldest first, only when free slots run low (the loader-cache and configured files stay).
  Detaching is slow (1.7 s a file here: the kernel waits out an RCU grace period per uprobe) and
  blocks exec handling meanwhile, so it is not done while slots are plentiful: a probe on a file
  nobody maps costs nothing.
"""

from __future__ import annotations

import heapq
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from recorder.capture import holds, image_layers
from recorder.capture.libraries import LibraryFile, LibraryFinder, file_identity
from recorder.capture.probes import AttachedLibrary, CaptureProgram
from recorder.capture.records import HEADER_DTYPE, HEADER_SIZE, K_EXEC, K_EXIT, K_HELD, K_LIBOPEN

log = logging.getLogger("oisp.record")

# After an exec, the process is checked again after these delays (seconds): libssl shows up in its
# maps only when the program loads it.
RECHECK_DELAYS = (0.005, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0)
POLL_INTERVAL_SECONDS = 0.005
# At an exec, new image layers are looked for at most this often (a directory listing per store).
LAYER_SCAN_MIN_INTERVAL = 0.05
# A layer without libssl is looked into again for this long after it appears: it may be half written.
LAYER_SETTLE_SECONDS = 60.0
# A process held at a file not judged yet is resumed after this long whatever happened to its event.
HOLD_MAX_SECONDS = 2.0


class LibraryDiscovery:
    def __init__(self, program: CaptureProgram, lib_paths: dict[int, str], rescan_interval: float,
                 proc: Path = Path("/proc"), wanted: Callable[[int], bool] = lambda pid: True,
                 layer_root: Path | None = None):
        self.program = program
        # image layers (image_layers.py): probed before any container maps them; None: not looked at
        self.layer_root = layer_root
        self._layers_done: set[str] = set()  # layers not to look into again
        self._layers_first: dict[str, float] = {}  # when each layer was first seen
        self._last_layer_scan = 0.0
        # (inode, size, mtime) of every file probed: one file seen through containers' roots has the
        # device of each container's overlay, not its own, so it is recognized by these
        self._content: dict[tuple[int, int, int], tuple[int, int]] = {}
        self._views: set[tuple[int, int]] = set()  # (dev, ino) of views of files already probed
        self._layer_probes = 0
        # processes outside the capture filters are not looked at: their libraries would only
        # take slots, their bytes are never recorded
        self.wanted = wanted
        self._no_slot: set[tuple[int, int]] = set()
        self.lib_paths = lib_paths  # lib_id -> path, shared with the decoder
        self.rescan_interval = rescan_interval
        self.proc = proc
        self.finder = LibraryFinder(proc)
        # counted in the program's totals
        program.unsupported_go = self.finder.unsupported_go
        program.unsupported_other = self.finder.unsupported_other
        self.by_file: dict[tuple[int, int], AttachedLibrary] = {}
        self._due: list[tuple[float, int]] = []  # (when, pid) rechecks after exec
        # (pid, comm, uid, cgroup id) of a process that just exec'd
        self.on_exec: Callable[[int, str, int, int], None] = lambda pid, comm, uid, cgroup_id: None
        self.on_exit: Callable[[int], None] = lambda pid: None
        self.execs_seen = 0
        self.hold_ms_max = 0.0  # the longest hold (processes_held: the program's totals)

    def attach(self, files: Iterable[LibraryFile]) -> list[AttachedLibrary]:
        """Probe the files not probed yet (by device and inode)."""
        added = []
        for lib in files:
            key = (lib.dev, lib.ino)
            content = _content_key(lib.path)
            if key in self.by_file or key in self._views or content is None:
                continue
            if content in self._content:
                self._views.add(key)  # the same file through another root: already probed
                continue
            if not self.program.free_slots:
                if key not in self._no_slot:  # said once per file, not at every recheck
                    self._no_slot.add(key)
                    log.warning("no free library slot for %s (%s; max_library_files=%d): not probed "
                                "until a slot frees up", lib.display_path, lib.found_by, self.program.slots)
                continue
            item = self.program.attach(lib)
            if item is None:
                continue
            self.finder.judged.append((content[0], content[1]))
            self.by_file[key] = item
            self._content[content] = key
            self.lib_paths[item.lib_id] = lib.display_path
            added.append(item)
        return added

    def scan_layers(self, now: float = 0.0) -> None:
        """Probe the libssl files of image layers not looked at yet (all of them the first time)."""
        if self.layer_root is None:
            return
        self._last_layer_scan = now
        first = not self._layers_first
        for layer in image_layers.layer_dirs(self.layer_root):
            if layer in self._layers_done:
                continue
            seen = self._layers_first.setdefault(layer, now)
            state = self._probe_layer(layer)
            # a layer is looked at again while it may still be being written (extracted, committed)
            if state == "probed" or state == "none" and (first or now - seen > LAYER_SETTLE_SECONDS):
                self._layers_done.add(layer)
        if first:
            log.info("image layers: %d under %s, %d libssl files probed in them", len(self._layers_first),
                     self.layer_root, self._layer_probes)

    def _probe_layer(self, layer: str) -> str:
        """Probe a layer's libssl files: "probed" (or already were), "none" (it has none, yet), or
        "incomplete" (one is not usable yet: a layer being written, a build's scratch layer)."""
        state = "none"
        for found in image_layers.tls_files(layer):
            ident = file_identity(found.path)
            if ident is None:
                continue
            state = "probed" if state == "none" else state  # already probed under another path, at least
            for item in self.attach([LibraryFile(found.path, found.inside, *ident, image_layers.FOUND_BY)]):
                if not item.usable:
                    self.forget(item)
                    state = "incomplete"
                    continue
                self._layer_probes += 1
                log.info("probed %s of image layer %s before any container maps it", found.inside,
                         Path(layer).parent.name[:12])
        return state

    def forget(self, item: AttachedLibrary) -> None:
        """Detach a file and forget it, so that it is looked at again."""
        key = (item.library.dev, item.library.ino)
        self.by_file.pop(key, None)
        self._content = {c: k for c, k in self._content.items() if k != key}
        self.program.detach(item.lib_id)

    def check_pid(self, pid: int) -> list[AttachedLibrary]:
        if not self.wanted(pid):
            return []
        return self.attach(self.finder.tls_files(pid))

    def rescan(self) -> None:
        """Scan every process; detach files that were found in maps and that no process maps now."""
        self.scan_layers(time.monotonic())  # first: a process's view of a layer file is then known
        in_use: set[tuple[int, int]] = set()
        for entry in os.scandir(self.proc):
            if not entry.name.isdigit() or not self.wanted(int(entry.name)):
                continue
            files = list(self.finder.tls_files(int(entry.name)))
            in_use.update((f.dev, f.ino) for f in files)
            self.attach(files)
        idle = [key for key, item in self.by_file.items()
                if key not in in_use and item.library.found_by not in ("config", "loader cache",
                                                                        image_layers.FOUND_BY)]
        self.program.mark_judged(self.finder.take_judged())
        low_water = max(1, self.program.slots // 4)
        for key in idle[:max(0, low_water - self.program.free_slots)]:
            self.forget(self.by_file[key])

    def handle_events(self, raws: list[bytes], now: float) -> None:
        if not raws:
            return
        good = [r for r in raws if len(r) >= HEADER_SIZE]
        h = np.frombuffer(b"".join(r[:HEADER_SIZE] for r in good), dtype=HEADER_DTYPE)
        for i, (kind, pid) in enumerate(zip(h["kind"].tolist(), h["pid"].tolist(), strict=True)):
            if kind == K_EXEC:
                self.execs_seen += 1
                comm = h["comm"][i].split(b"\0", 1)[0].decode("utf-8", "replace")
                self.on_exec(pid, comm, int(h["uid"][i]), int(h["cgroup_id"][i]))
                self._recheck(pid)
                if now - self._last_layer_scan >= LAYER_SCAN_MIN_INTERVAL:
                    self.scan_layers(now)  # a container of a new image may be starting
                for delay in RECHECK_DELAYS:
                    heapq.heappush(self._due, (now + delay, pid))
            elif kind == K_EXIT:
                self.on_exit(pid)
            elif kind == K_LIBOPEN:
                raw = good[i]
                name = raw[HEADER_SIZE:HEADER_SIZE + int(h["len"][i])].decode("utf-8", "replace")
                self.library_opened(pid, name)
            elif kind == K_HELD:
                self.held(pid, int(h["tid"][i]), (int(h["offset"][i]), int(h["call_len"][i])))
        self.program.mark_judged(self.finder.take_judged())

    def held(self, pid: int, tid: int, file: tuple[int, int]) -> None:
        """A process the capture program stopped at a file (inode, size) not judged yet: judge and probe
        what it maps, then resume it, whatever happens meanwhile."""
        started = time.monotonic()
        try:
            if holds.wait_stopped(pid, tid):  # its mapping is in its maps only once it has stopped
                self._recheck(pid)
        finally:
            self.finder.judged.append(file)  # as the kernel saw it, should its maps not show it
            self.program.mark_judged(self.finder.take_judged())
            self.program.resume(pid)
            self.program.processes_held += 1
            self.hold_ms_max = max(self.hold_ms_max, (time.monotonic() - started) * 1000)

    def release_expired(self) -> None:
        """Resume processes held longer than HOLD_MAX_SECONDS: their HELD record was lost (the events
        ring buffer full) or its handling failed. A process must not stay stopped for a probe."""
        if not self.program.holding:
            return
        now = time.monotonic_ns()
        for pid, since in self.program.held_pids().items():
            if now - since > HOLD_MAX_SECONDS * 1e9:
                self.program.resume(pid)
                self.program.holds_expired += 1
                log.warning("pid %d was held %.1f s at a file not judged yet: resumed", pid,
                            (now - since) / 1e9)

    def library_opened(self, pid: int, name: str) -> None:
        if not self.wanted(pid):
            return
        base = f"{self.proc}/{pid}/root" if name.startswith("/") else f"{self.proc}/{pid}/cwd/"
        path = base + name
        ident = file_identity(path)
        if ident is None:
            return  # gone already, or the open failed (the loader tries several directories)
        for item in self.attach([LibraryFile(path, name, ident[0], ident[1], f"opened by pid {pid}")]):
            log.info("new TLS library %s opened by pid %d", item.library.display_path, pid)

    def _recheck(self, pid: int) -> None:
        for item in self.check_pid(pid):
            log.info("new TLS library %s in pid %d", item.library.display_path, pid)

    def run_due(self, now: float) -> None:
        while self._due and self._due[0][0] <= now:
            _, pid = heapq.heappop(self._due)
            self._recheck(pid)
        self.program.mark_judged(self.finder.take_judged())


def _content_key(path: str) -> tuple[int, int, int] | None:
    """(inode, size, modification time) of a file: the same for every path to it, overlays included."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def capture_filter(pids: list[int], comms: list[str], cgroups: list[str],
                   proc: Path = Path("/proc")) -> Callable[[int], bool]:
    """The recorder's capture filters as a test on a process, as the BPF program applies them: all
    given filters must match; the cgroup is the process's own cgroup v2 path, exactly."""
    pid_set, comm_set = set(pids), {c[:15] for c in comms}
    cgroup_set = {"/" + c.strip("/") for c in cgroups}

    def wanted(pid: int) -> bool:
        if pid_set and pid not in pid_set:
            return False
        try:
            if comm_set and (proc / str(pid) / "comm").read_text().strip() not in comm_set:
                return False
            if cgroup_set:
                lines = (proc / str(pid) / "cgroup").read_text().splitlines()
                if not any(line.startswith("0::") and line[3:] in cgroup_set for line in lines):
                    return False
        except OSError:
            return False  # gone
        return True

    return wanted


def run_in_thread(discovery: LibraryDiscovery, read_events: Callable[[list[bytes]], int] | None,
                  stop: threading.Event) -> threading.Thread:
    """Poll the exec/exit events and run rechecks and rescans until `stop` is set. Without an event
    reader (architectures where the ring buffer cannot be read directly) only rescans run."""

    def loop() -> None:
        last_rescan = last_expiry = time.monotonic()
        while not stop.wait(POLL_INTERVAL_SECONDS):
            now = time.monotonic()
            try:
                if read_events is not None:
                    raws: list[bytes] = []
                    read_events(raws)
                    discovery.handle_events(raws, now)
                discovery.run_due(now)
                if now - last_expiry >= HOLD_MAX_SECONDS / 4:
                    discovery.release_expired()
                    last_expiry = now
                if now - last_rescan >= discovery.rescan_interval:
                    discovery.rescan()
                    last_rescan = time.monotonic()
            except Exception:  # keep discovering: one bad process must not end it
                log.exception("library discovery failed; continuing")

    thread = threading.Thread(target=loop, name="library-discovery", daemon=True)
    thread.start()
    return thread
