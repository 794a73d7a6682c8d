"""Decode HTTP bodies: Content-Encoding (gzip, deflate, br, zstd) under a size cap, and split
text/event-stream and NDJSON bodies into events.

A body that would decode past the cap is a decompression bomb: it is flagged and left undecoded
past the cap, never followed. A body that fails to decode keeps its raw bytes and says why.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import brotli
import zstandard

DEFAULT_MAX_DECODED = 64 * 1024 * 1024
_STEP = 64 * 1024


class BodyTooLarge(Exception):
    pass


@dataclass
class DecodedBody:
    data: bytes  # decoded bytes (or the raw bytes when decoding failed)
    encoding: str  # content-encoding chain as given, "" for identity
    error: str | None = None  # why decoding failed or stopped: "bomb: ...", "gzip: ..."
    truncated: bool = False  # the body was cut by a gap or the decode cap


def _zlib(data: bytes, wbits: int, cap: int) -> bytes:
    d = zlib.decompressobj(wbits)
    out = bytearray()
    buf = data
    while True:
        chunk = d.decompress(buf, _STEP)
        out += chunk
        if len(out) > cap:
            raise BodyTooLarge(f"decodes to more than {cap} bytes")
        buf = d.unconsumed_tail
        if not buf:
            break
    out += d.flush()
    if len(out) > cap:
        raise BodyTooLarge(f"decodes to more than {cap} bytes")
    if not d.eof:
        raise ValueError("stream ends before the end of the compressed data")
    return bytes(out)


def _deflate(data: bytes, cap: int) -> bytes:
    try:
        return _zlib(data, zlib.MAX_WBITS, cap)  # zlib-wrapped, as the RFC says
    except zlib.error:
        return _zlib(data, -zlib.MAX_WBITS, cap)  # raw deflate, as some servers send


def _brotli(data: bytes, cap: int) -> bytes:
    d = brotli.Decompressor()
    out = bytearray(d.process(data, output_buffer_limit=_STEP))
    while not d.is_finished() and len(out) <= cap:
        more = d.process(b"", output_buffer_limit=_STEP)
        if not more:
            break
        out += more
    if len(out) > cap:
        raise BodyTooLarge(f"decodes to more than {cap} bytes")
    if not d.is_finished():
        raise ValueError("stream ends before the end of the compressed data")
    return bytes(out)


def _zstd(data: bytes, cap: int) -> bytes:
    reader = zstandard.ZstdDecompressor().stream_reader(data, read_across_frames=True)
    out = bytearray()
    while True:
        chunk = reader.read(_STEP)
        if not chunk:
            break
        out += chunk
        if len(out) > cap:
            raise BodyTooLarge(f"decodes to more than {cap} bytes")
    return bytes(out)


_DECODERS = {
    "gzip": lambda d, cap: _zlib(d, 16 + zlib.MAX_WBITS, cap),
    "x-gzip": lambda d, cap: _zlib(d, 16 + zlib.MAX_WBITS, cap),
    "deflate": _deflate,
    "br": _brotli,
    "zstd": _zstd,
}


def decode_body(raw: bytes | bytearray, content_encoding: str | None, max_decoded: int = DEFAULT_MAX_DECODED,
                truncated: bool = False) -> DecodedBody:
    """Undo each Content-Encoding in reverse order of application."""
    raw = bytes(raw)
    chain = [c.strip().lower() for c in (content_encoding or "").split(",") if c.strip()]
    chain = [c for c in chain if c != "identity"]
    data = raw
    for coding in reversed(chain):
        decoder = _DECODERS.get(coding)
        if decoder is None:
            return DecodedBody(raw, ",".join(chain), f"unsupported content-encoding {coding}", truncated)
        try:
            data = decoder(data, max_decoded)
        except BodyTooLarge as exc:
            return DecodedBody(raw, ",".join(chain), f"bomb: {coding} body {exc}", truncated)
        except (zlib.error, brotli.error, zstandard.ZstdError, ValueError) as exc:
            return DecodedBody(raw, ",".join(chain), f"{coding}: {exc}", truncated)
    return DecodedBody(data, ",".join(chain), None, truncated)


@dataclass
class SseEvent:
    event: str  # "message" unless an `event:` field said otherwise
    data: str
    id: str | None = None
    retry: int | None = None


@dataclass
class SseParser:
    """text/event-stream as the WHATWG spec defines it: lines end in CRLF, LF or CR; `data:` lines
    join with newlines; a blank line dispatches; comments start with ':'. Feed any split of bytes."""

    _buf: bytes = b""
    _data: list[str] = field(default_factory=list)
    _event: str = ""
    _id: str | None = None
    _retry: int | None = None
    _saw_cr: bool = False
    _has_fields: bool = False

    def feed(self, chunk: bytes) -> list[SseEvent]:
        if self._saw_cr and chunk.startswith(b"\n"):
            chunk = chunk[1:]  # the LF of a CRLF split across two feeds
        self._saw_cr = False
        buf = self._buf + chunk
        events: list[SseEvent] = []
        start = 0
        n = len(buf)
        while True:
            i_lf = buf.find(b"\n", start)
            i_cr = buf.find(b"\r", start)
            if i_lf < 0 and i_cr < 0:
                break
            if i_cr >= 0 and (i_lf < 0 or i_cr < i_lf):
                end = i_cr
                if i_cr + 1 < n:
                    nxt = i_cr + 2 if buf[i_cr + 1:i_cr + 2] == b"\n" else i_cr + 1
                else:
                    self._saw_cr = True
                    nxt = i_cr + 1
            else:
                end, nxt = i_lf, i_lf + 1
            ev = self._line(buf[start:end])
            if ev:
                events.append(ev)
            start = nxt
        self._buf = buf[start:]
        return events

    def _line(self, raw: bytes) -> SseEvent | None:
        line = raw.decode("utf-8", "replace")
        if line == "":
            if not self._has_fields:
                return None
            ev = SseEvent(self._event or "message", "\n".join(self._data), self._id, self._retry)
            self._data, self._event, self._retry, self._has_fields = [], "", None, False
            return ev
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        self._has_fields = True
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._id = value
        elif name == "retry" and value.isdigit():
            self._retry = int(value)
        return None

    def finish(self) -> tuple[list[SseEvent], bool]:
        """Events still open at the end of the body (dispatched), and whether any were cut off."""
        cut = bool(self._buf.strip()) or self._has_fields
        events = self.feed(b"\n\n") if cut else []
        return events, cut


def split_ndjson(data: bytes) -> tuple[list[str], bool]:
    """Lines of an NDJSON body; the second value says whether the last line was cut off."""
    lines = data.split(b"\n")
    cut = lines[-1].strip() != b""
    return [ln.decode("utf-8", "replace") for ln in lines if ln.strip()], cut
