"""Checks before loading any probe, each failing with a message that says what to do.

Every check logs what it found, so that the recorder's start-up log alone explains a node on which
nothing is captured: kernel version, BTF, where the kernel headers came from, tracefs.
"""

from __future__ import annotations

import logging
import os
import platform
import subprocess
import sys
from pathlib import Path

log = logging.getLogger("oisp.record")

# Capability bits (linux/capability.h)
CAP_SYS_ADMIN = 21
CAP_PERFMON = 38
CAP_BPF = 39

DEBIAN_BCC = Path("/usr/lib/python3/dist-packages")


class PreflightError(RuntimeError):
    """The node cannot run the recorder as it is: a runtime failure (exit code 1)."""


def effective_capabilities() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    return 0


def check_privileges() -> None:
    caps = effective_capabilities()
    has = lambda bit: bool(caps >> bit & 1)  # noqa: E731
    if has(CAP_SYS_ADMIN) or (has(CAP_BPF) and has(CAP_PERFMON)):
        return
    who = "root" if os.geteuid() == 0 else f"uid {os.geteuid()}"
    raise PreflightError(
        f"running as {who} without the capabilities to load eBPF programs "
        f"(effective set {caps:#x}): run as root, or grant CAP_BPF and CAP_PERFMON "
        "(or CAP_SYS_ADMIN)"
    )


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
        if (base / "uprobe_events").exists():
            return str(base)
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
    """Create the directory 0700 (segments hold secrets) and prove it is writable."""
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(path, 0o700)
        probe = path / ".oisp-write-check"
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.close(fd)
        probe.unlink()
    except OSError as exc:
        raise PreflightError(f"segments directory {path} is not writable: {exc.strerror}") from None


def run_all() -> object:
    """Run every check in order and return bcc's BPF class."""
    describe_kernel()
    check_privileges()
    check_uprobe_support()
    bpf_cls = import_bcc()
    log.info("kernel headers: %s", kernel_headers())
    log.info("tracefs: %s", ensure_tracefs())
    return bpf_cls
