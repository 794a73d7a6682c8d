"""A process's TCP socket by fd: local and peer address from the kernel's socket tables.

The BPF side knows a connection's fd and, for sockets the process connect()ed itself, the peer
address. The local address (and the peer of an accepted socket) comes from /proc/PID/net/tcp{,6},
which lists the sockets of the process's network namespace by inode; /proc/PID/fd/FD names the
inode. Best effort: a socket already closed when the record is decoded is simply not found.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path


def parse_proc_address(hex_addr: str) -> tuple[str, int]:
    """'0100007F:01BB' (IPv4) or 32 hex digits (IPv6), each 32-bit word in host (little) order."""
    host, port = hex_addr.split(":")
    raw = bytes.fromhex(host)
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    if len(words) == 4:
        return str(ipaddress.IPv4Address(words)), int(port, 16)
    ip6 = ipaddress.IPv6Address(words)
    return str(ip6.ipv4_mapped or ip6), int(port, 16)


def socket_inode(pid: int, fd: int, proc: Path = Path("/proc")) -> int | None:
    try:
        target = os.readlink(proc / str(pid) / "fd" / str(fd))
    except OSError:
        return None
    if not target.startswith("socket:["):
        return None
    return int(target[8:-1])


def lookup(pid: int, fd: int, proc: Path = Path("/proc")) -> tuple[str, int, str, int] | None:
    """(local ip, local port, peer ip, peer port) of the TCP socket `fd` of `pid`, if still open."""
    inode = socket_inode(pid, fd, proc)
    if inode is None:
        return None
    wanted = str(inode)
    for table in ("tcp", "tcp6"):
        try:
            lines = (proc / str(pid) / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if len(parts) > 9 and parts[9] == wanted:
                local, peer = parse_proc_address(parts[1]), parse_proc_address(parts[2])
                return local[0], local[1], peer[0], peer[1]
    return None
