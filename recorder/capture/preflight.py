"""Checks before loading any probe, each failing with a message that says what to do.

Every check logs what it found, so that the recorder's start-up log alone explains a node on which
nothing is captured: kernel version, BTF, where the kernel headers came from, tracefs.
"""

from __future__ import annotations

import errno
import logging
import os
import platform
import subprocess
import sys
from pathlib import Path

from recorder.capture import uprobe_links
from recorder.store import owned

log = logging.getLogger("oisp.record")

# Capability bits (linux/capability.h)
CAP_DAC_OVERRIDE = 1
CAP_DAC_READ_SEARCH = 2
CAP_KILL = 5
CAP_SYS_PTRACE = 19
CAP_SYS_ADMIN = 21
CAP_SYS_RESOURCE = 24
CAP_PERFMON = 38
CAP_BPF = 39

# What the recorder cannot work without (docs/recorder.md, Capabilities). CAP_SYS_ADMIN stands in for
# CAP_BPF and CAP_PERFMON (the kernel accepts either), not for CAP_SYS_PTRACE.
REQUIRED_CAPABILITIES = {
    "CAP_BPF": (CAP_BPF, "BPF maps and programs"),
    "CAP_PERFMON": (CAP_PERFMON, "tracing programs, uprobe and tracepoint events"),
    # Without it the recorder runs but silently sees only the host's libssl: /proc/PID/maps, root,
    # exe and fd links of processes of other users or with other capabilities are refused.
    "CAP_SYS_PTRACE": (CAP_SYS_PTRACE, "other processes' /proc/PID/maps, /proc/PID/root and fd links"),
}

DEBIAN_BCC = Path("/usr/lib/python3/dist-packages")


class PreflightError(RuntimeError):
    """The node cannot run the recorder as it is: a runtime failure (exit code 1)."""


def effective_capabilities() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    return 0


def missing_capabilities(caps: int) -> list[str]:
    has = lambda bit: bool(caps >> bit & 1)  # noqa: E731
    return [name for name, (bit, _why) in REQUIRED_CAPABILITIES.items()
            if not has(bit) and not (bit in (CAP_BPF, CAP_PERFMON) and has(CAP_SYS_ADMIN))]


def check_privileges() -> None:
    caps = effective_capabilities()
    who = "root" if os.geteuid() == 0 else f"uid {os.geteuid()}"
    missing = missing_capabilities(caps)
    if missing:
        named = ", ".join(f"{name} ({REQUIRED_CAPABILITIES[name][1]})" for name in missing)
        raise PreflightError(
            f"running as {who} without the capabilities to load eBPF programs and read other "
            f"processes: missing {named}; effective set {caps:#x}: run as root, or grant them "
            "(docs/recorder.md, Capabilities)"
        )
    has = lambda bit: bool(caps >> bit & 1)  # noqa: E731
    if os.geteuid() != 0 and not (has(CAP_DAC_READ_SEARCH) or has(CAP_DAC_OVERRIDE)):
        log.warning("running as %s without CAP_DAC_READ_SEARCH: library files only root can read "
                    "cannot be probed", who)
    if not task_memory_accounted() and not has(CAP_SYS_RESOURCE):
        log.warning("kernel before 5.11 and no CAP_SYS_RESOURCE: BPF maps count against "
                    "RLIMIT_MEMLOCK, which may be too small for the ring buffer")


def task_memory_accounted(release: str | None = None) -> bool:
    """BPF memory is charged to the memory cgroup, not RLIMIT_MEMLOCK, from Linux 5.11."""
    parts = (release or platform.release()).split(".")
    try:
        return (int(parts[0]), int(parts[1].split("-")[0])) >= (5, 11)
    except (IndexError, ValueError):
        return True


def uprobe_pmu_usable() -> bool:
    """Whether this process may create uprobes through the uprobe PMU (uprobe_links.pmu_usable)."""
    return uprobe_links.pmu_usable()


def check_uprobe_creation(tracefs: str) -> str:
    """Say how uprobes will be created: through the uprobe PMU, else by writing uprobe_events in
    tracefs (a root-owned 0640 file: uid 0 writes it as its owner, another uid needs
    CAP_DAC_OVERRIDE). Fail, naming what is missing, when neither works."""
    if uprobe_pmu_usable():
        return "uprobe PMU"
    events = Path(tracefs) / "uprobe_events"
    try:
        # Opened for writing and closed: never with O_TRUNC, which would delete every uprobe event.
        os.close(os.open(events, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC))
    except OSError as exc:
        raise PreflightError(
            f"cannot create uprobes: the kernel refuses its uprobe PMU without CAP_SYS_ADMIN, and "
            f"{events} is not writable ({exc.strerror}): run as uid 0, or add CAP_DAC_OVERRIDE "
            "(tracefs is root's), or CAP_SYS_ADMIN"
        ) from None
    return f"through {events} (the uprobe PMU needs CAP_SYS_ADMIN here)"


def import_bcc():
    """Import bcc, which comes from Debian's python3-bpfcc (the PyPI package 'bcc' is unrelated)."""
    try:
        import bcc  # noqa: F401
    except ImportError:
        if (DEBIAN_BCC / "bcc").is_dir() and str(DEBIAN_BCC) not in sys.path:
            # Only reached outside the project venv; append so Debian's other packages lose ties.
            sys.path.append(str(DEBIAN_BCC))
        try:
            import bcc  # noqa: F401
        except ImportError as exc:
            raise PreflightError(
                "bcc is not installed: apt-get install python3-bpfcc libbpfcc "
                f"(the PyPI package named 'bcc' is a different project) [{exc}]"
            ) from None
    try:
        from bcc import BPF
    except (ImportError, OSError) as exc:
        raise PreflightError(f"bcc is installed but does not load (libbpfcc missing?): {exc}") from None
    return BPF


def kernel_headers() -> str:
    """Say where bcc will find kernel headers, or fail saying how to provide them."""
    release = platform.release()
    env = os.environ.get("BCC_KERNEL_SOURCE")
    if env:
        if not Path(env).is_dir():
            raise PreflightError(f"BCC_KERNEL_SOURCE={env} is not a directory")
        return f"BCC_KERNEL_SOURCE={env}"
    build = Path("/lib/modules") / release / "build"
    if build.exists():
        return f"{build} -> {build.resolve()}"
    if Path("/sys/kernel/kheaders.tar.xz").exists():
        return "/sys/kernel/kheaders.tar.xz (CONFIG_IKHEADERS)"
    # Uprobe programs need only pt_regs: any recent headers for this architecture do.
    candidates = sorted(Path("/usr/src").glob("linux-headers-*-amd64")) if Path("/usr/src").is_dir() else []
    if candidates:
        raise PreflightError(
            f"no kernel headers at {build}; headers exist at {candidates[-1]}: "
            f"link {build} to it and /lib/modules/{release}/source to the matching "
            "linux-headers-*-common, or set BCC_KERNEL_SOURCE"
        )
    raise PreflightError(
        f"no kernel headers for {release}: install linux-headers-amd64 (any recent version works "
        f"for uprobes) and link {build} to it, or set BCC_KERNEL_SOURCE"
    )


def ensure_tracefs() -> str:
    """bcc writes uprobe_events when it detaches: tracefs must be mounted."""
    for base in (Path("/sys/kernel/tracing"), Path("/sys/kernel/debug/tracing")):
        try:
            if (base / "uprobe_events").exists():
                return str(base)
        except PermissionError:  # tracefs is 0700 root: another uid cannot even look
            raise PreflightError(
                f"cannot look into {base} as uid {os.geteuid()}: run as uid 0, or add CAP_DAC_OVERRIDE"
            ) from None
    target = Path("/sys/kernel/tracing")
    result = subprocess.run(
        ["mount", "-t", "tracefs", "tracefs", str(target)], capture_output=True, text=True
    )
    if result.returncode == 0 and (target / "uprobe_events").exists():
        log.info("mounted tracefs at %s", target)
        return str(target)
    raise PreflightError(
        f"tracefs is not mounted and mounting it at {target} failed: {result.stderr.strip()} "
        "(mount -t tracefs tracefs /sys/kernel/tracing)"
    )


def check_uprobe_support() -> None:
    if not Path("/sys/bus/event_source/devices/uprobe").exists():
        raise PreflightError("this kernel has no uprobe support (no uprobe PMU): CONFIG_UPROBE_EVENTS")


def describe_kernel() -> None:
    log.info("kernel %s on %s", platform.release(), platform.machine())
    btf = Path("/sys/kernel/btf/vmlinux")
    log.info("BTF: %s", f"present at {btf}" if btf.exists() else "absent (not needed by bcc)")


def prepare_segments_dir(path: Path) -> None:
    """Create the directory 0700 (segments hold secrets), make sure it is the recorder's own, and
    prove it is writable. An existing directory is made 0700 only when the recorder's uid owns it:
    a symbolic link (it could send the plaintext anywhere), a file, or another user's directory
    (its owner could read the segments or plant files in it) is refused."""
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
    except FileExistsError:
        pass  # not a directory, or a dangling link: said below
    except OSError as exc:
        raise PreflightError(f"segments directory {path} is not writable: {exc.strerror}") from None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise PreflightError(_not_a_directory(path, exc)) from None
    try:
        owner = os.fstat(fd).st_uid
        if owner != os.geteuid():
            raise PreflightError(
                f"segments directory {path} belongs to uid {owner}, not to the recorder's uid "
                f"{os.geteuid()}: refusing it (its owner could read the captured plaintext or plant "
                "files in it); chown it to the recorder's user, or choose another directory")
        os.fchmod(fd, 0o700)
    except OSError as exc:
        raise PreflightError(f"segments directory {path}: cannot make it 0700: {exc.strerror}") from None
    finally:
        os.close(fd)
    probe = path / ".oisp-write-check"
    try:
        os.close(owned.create(probe))
        probe.unlink()
    except FileExistsError as exc:  # a link or a file not ours, planted before the directory was 0700
        raise PreflightError(
            f"segments directory {path}: cannot create {probe.name}: {exc.strerror}") from None
    except OSError as exc:
        raise PreflightError(f"segments directory {path} is not writable: {exc.strerror}") from None


def _not_a_directory(path: Path, exc: OSError) -> str:
    if path.is_symlink():
        return (f"segments directory {path} is a symbolic link: refusing it (a link could send the "
                "captured plaintext anywhere); give the directory's real path")
    if exc.errno == errno.ENOTDIR or path.exists():
        return f"segments directory {path} is not a directory"
    return f"segments directory {path} is not writable: {exc.strerror}"


def run_all() -> object:
    """Run every check in order and return bcc's BPF class."""
    describe_kernel()
    check_privileges()
    check_uprobe_support()
    bpf_cls = import_bcc()
    log.info("kernel headers: %s", kernel_headers())
    tracefs = ensure_tracefs()
    log.info("tracefs: %s", tracefs)
    log.info("uprobes: %s", check_uprobe_creation(tracefs))
    return bpf_cls
