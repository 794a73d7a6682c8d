"""Read a BPF ring buffer through its memory mapping, a batch of records at a time.

libbpf's consumer (what bcc offers) calls back into Python once per record through ctypes, which at
40,000 records a second costs a good part of a core. The ring buffer's layout is a kernel ABI
(include/uapi/linux/bpf.h, kernel/bpf/ringbuf.c): a consumer-position page we may write, then a
producer-position page and the data area, mapped twice in a row so that a record that wraps around
is still contiguous. Each record starts with an 8-byte header: its length, with a BUSY bit while the
producer is still writing it and a DISCARD bit for discarded records; records are 8-byte aligned.

Memory ordering: the producer publishes a record by clearing BUSY with a release store; x86's
total store order makes our plain loads (header, then data) and the final consumer-position store
safe. On other architectures the recorder uses libbpf's consumer instead.
"""

from __future__ import annotations

import mmap
import platform

BUSY = 1 << 31
DISCARD = 1 << 30
HEADER = 8

SUPPORTED = platform.machine() in ("x86_64", "AMD64")


class RingBufferReader:
    def __init__(self, map_fd: int, size: int):
        if size & (size - 1):
            raise ValueError("a ring buffer's size is a power of two")
        page = mmap.PAGESIZE
        self.mask = size - 1
        self._consumer = mmap.mmap(map_fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
        self._producer = mmap.mmap(map_fd, page + 2 * size, mmap.MAP_SHARED, mmap.PROT_READ, offset=page)
        self._data = memoryview(self._producer)[page:]
        self._prod = memoryview(self._producer)[:8]
        self._cons = memoryview(self._consumer)[:8]

    def read(self, out: list[bytes]) -> int:
        """Append every published record to `out`; returns the bytes appended."""
        cons = int.from_bytes(self._cons, "little")
        prod = int.from_bytes(self._prod, "little")
        data, mask = self._data, self.mask
        total = 0
        append = out.append
        while cons < prod:
            off = cons & mask
            hdr = int.from_bytes(data[off:off + 4], "little")
            if hdr & BUSY:
                break  # still being written; it and everything after wait for the next read
            length = hdr & ~(BUSY | DISCARD)
            if not hdr & DISCARD:
                append(bytes(data[off + HEADER:off + HEADER + length]))
                total += length
            cons += (length + HEADER + 7) & ~7
        self._cons[:] = cons.to_bytes(8, "little")
        return total

    def close(self) -> None:
        for view in (self._data, self._prod, self._cons):
            view.release()
        self._producer.close()
        self._consumer.close()
