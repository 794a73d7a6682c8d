"""The AWS event-stream binary framing (`application/vnd.amazon.eventstream`), used by Bedrock's
ConverseStream and InvokeModelWithResponseStream. Sans-IO: bytes in, messages out.

A message is: total length (u32), headers length (u32), prelude CRC32, headers, payload, message
CRC32, all big-endian. Headers are name (u8 length + bytes), a type byte and a typed value."""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

MAX_MESSAGE = 16 * 1024 * 1024
# value sizes of the fixed-size header types: bool true/false, byte, short, int, long, timestamp, uuid
_FIXED = {0: 0, 1: 0, 2: 1, 3: 2, 4: 4, 5: 8, 8: 8, 9: 16}


@dataclass
class EventMessage:
    headers: dict[str, object]
    payload: bytes

    @property
    def event_type(self) -> str | None:
        value = self.headers.get(":event-type") or self.headers.get(":exception-type")
        return value if isinstance(value, str) else None

    @property
    def is_exception(self) -> bool:
        return self.headers.get(":message-type") in ("exception", "error")


class EventStreamError(ValueError):
    pass


def _take(raw: bytes, i: int, size: int, what: str) -> int:
    """The end of a field of size bytes at raw[i], which must lie inside the headers."""
    if i + size > len(raw):
        raise EventStreamError(f"header {what} runs past the end of the headers")
    return i + size


def _headers(raw: bytes) -> dict[str, object]:
    """The headers, each checked against the headers' length (their CRC only says the sender wrote
    them so). Every header takes at least two bytes, so the loop always moves on."""
    out: dict[str, object] = {}
    i = 0
    while i < len(raw):
        n = raw[i]
        end = _take(raw, i + 1, n, "name")
        name = raw[i + 1:end].decode("utf-8", "replace")
        i = _take(raw, end, 1, "type")
        kind = raw[end]
        if kind in (6, 7):  # bytes, string: u16 length
            i = _take(raw, i, 2, "length")
            (length,) = struct.unpack_from(">H", raw, i - 2)
            end, i = i, _take(raw, i, length, "value")
            out[name] = raw[end:i].decode("utf-8", "replace") if kind == 7 else bytes(raw[end:i])
        elif kind in _FIXED:
            end, i = i, _take(raw, i, _FIXED[kind], "value")
            out[name] = kind == 0 if kind in (0, 1) else raw[end:i]
        else:
            raise EventStreamError(f"unknown header type {kind}")
    return out


def decode(data: bytes) -> tuple[list[EventMessage], bytes]:
    """Every complete message in data, and the bytes of an unfinished one left over. A malformed
    message raises EventStreamError; each message is at least 16 bytes, so the loop moves on."""
    messages = []
    pos = 0
    while len(data) - pos >= 12:
        total, hlen, prelude_crc = struct.unpack_from(">III", data, pos)
        if zlib.crc32(data[pos:pos + 8]) != prelude_crc:
            raise EventStreamError(f"prelude CRC mismatch at byte {pos}")
        if total > MAX_MESSAGE or total < 16 + hlen:
            raise EventStreamError(f"implausible message length {total} at byte {pos}")
        if len(data) - pos < total:
            break
        msg = data[pos:pos + total]
        (crc,) = struct.unpack_from(">I", msg, total - 4)
        if zlib.crc32(msg[:-4]) != crc:
            raise EventStreamError(f"message CRC mismatch at byte {pos}")
        messages.append(EventMessage(_headers(msg[12:12 + hlen]), msg[12 + hlen:total - 4]))
        pos += total
    return messages, data[pos:]


def encode(headers: dict[str, str], payload: bytes) -> bytes:
    """A message with string headers (for tests and fake servers)."""
    raw = b"".join(struct.pack(">B", len(k)) + k.encode() + b"\x07" + struct.pack(">H", len(v)) + v.encode()
                   for k, v in headers.items())
    total = 12 + len(raw) + len(payload) + 4
    prelude = struct.pack(">II", total, len(raw))
    head = prelude + struct.pack(">I", zlib.crc32(prelude)) + raw + payload
    return head + struct.pack(">I", zlib.crc32(head))
