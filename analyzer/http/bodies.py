"""Decode HTTP bodies: Content-Encoding (gzip, deflate, br, zstd) under a size cap, and split
text/event-stream and NDJSON bodies into events.

Every byte here was written by another program, so each decoder works in bounded steps: output comes
in chunks of at most _STEP bytes and is counted against the cap before it is kept, so a decompression
bomb costs work in proportion to the cap, not to what it would expand to, and is flagged and left
undecoded. A body that fails to decode keeps its raw bytes and says why. A gzip body with bytes after
its last member keeps what decoded and says so.
"""

from __future__ import annotations

import io
import re
import zlib
from dataclasses import dataclass, field
from functools import lru_cache

import brotli
import zstandard

# the defaults of Limits.max_decoded_body_bytes and Limits.max_event_line_bytes (analyzer/model.py)
DEFAULT_MAX_DECODED = 64 * 1024 * 1024
MAX_LINE = 8 * 1024 * 1024  # longest SSE or NDJSON line kept: longer ones are cut here and flagged
_STEP = 64 * 1024  # most output per decompressor call, and most input fed per zlib call
_GZIP_MAGIC = b"\x1f\x8b"
_TRUNCATED = "stream ends before the end of the compressed data"


class BodyTooLarge(Exception):
    pass


@dataclass
class DecodedBody:
    data: bytes  # decoded bytes (or the raw bytes when decoding failed)
    encoding: str  # content-encoding chain as given, "" for identity
    # why decoding failed ("bomb: ...", "gzip: ...": data is then the raw bytes) or stopped early
    # (bytes after the last gzip member: data is what decoded before them)
    error: str | None = None
    truncated: bool = False  # the body was cut by a gap or the decode cap


class _Output:
    """Decoded bytes under a cap: never holds more than the cap (the chunk that would pass it is
    refused), and hands over its buffer without a copy."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self._buf = io.BytesIO()

    @property
    def size(self) -> int:
        return self._buf.tell()

    def add(self, chunk: bytes) -> None:
        if self._buf.tell() + len(chunk) > self.cap:
            raise BodyTooLarge(f"decodes to more than {self.cap} bytes")
        self._buf.write(chunk)

    def cut(self, size: int) -> None:
        self._buf.seek(size)
        self._buf.truncate()

    def value(self) -> bytes:
        return self._buf.getvalue()


def _inflate(data: memoryview, pos: int, wbits: int, out: _Output) -> int:
    """Decode one zlib, gzip or raw deflate stream that starts at data[pos]; return where it ends.
    Input goes in _STEP slices, so the unconsumed tail zlib copies on each call stays small; each
    call must consume input or produce output, or the stream is refused."""
    d = zlib.decompressobj(wbits)
    fed = pos
    while not d.eof:
        tail = d.unconsumed_tail
        if tail:
            chunk = d.decompress(tail, _STEP)
            if not chunk and len(d.unconsumed_tail) >= len(tail) and not d.eof:
                raise ValueError("decoder makes no progress")
        elif fed < len(data):
            chunk = d.decompress(data[fed:fed + _STEP], _STEP)
            fed = min(fed + _STEP, len(data))
        else:
            raise ValueError(_TRUNCATED)
        out.add(chunk)
    return fed - len(d.unused_data)  # at the end, unused_data is what followed it in the last slice


def _trailing(coding: str, data: bytes, end: int, what: str) -> str | None:
    extra = len(data) - end
    return f"{coding}: {extra} bytes of trailing garbage after {what}, ignored" if extra else None


def _gzip(data: bytes, cap: int) -> tuple[bytes, str | None]:
    """The members in turn (RFC 1952 allows several) under one cap. Errors in the first member are
    the body's; bytes after a complete member that are not a good member are flagged and dropped."""
    out = _Output(cap)
    view = memoryview(data)
    pos = _inflate(view, 0, 16 + zlib.MAX_WBITS, out)
    members = 1
    while pos < len(data) and data[pos:pos + 2] == _GZIP_MAGIC:
        kept = out.size
        try:
            pos = _inflate(view, pos, 16 + zlib.MAX_WBITS, out)
        except (zlib.error, ValueError) as exc:
            out.cut(kept)
            return out.value(), f"gzip: member {members + 1} ignored: {exc}"
        members += 1
    return out.value(), _trailing("gzip", data, pos, f"member {members}")


def _deflate(data: bytes, cap: int) -> tuple[bytes, str | None]:
    view = memoryview(data)
    try:
        out = _Output(cap)
        end = _inflate(view, 0, zlib.MAX_WBITS, out)  # zlib-wrapped, as the RFC says
    except zlib.error:
        out = _Output(cap)
        end = _inflate(view, 0, -zlib.MAX_WBITS, out)  # raw deflate, as some servers send
    return out.value(), _trailing("deflate", data, end, "the stream")


def _brotli(data: bytes, cap: int) -> tuple[bytes, str | None]:
    out = _Output(cap)
    d = brotli.Decompressor()
    chunk = d.process(data, output_buffer_limit=_STEP)
    while chunk:  # an empty chunk: finished, or waiting for input that will not come
        out.add(chunk)
        chunk = d.process(b"", output_buffer_limit=_STEP) if not d.is_finished() else b""
    if not d.is_finished():
        raise ValueError(_TRUNCATED)
    return out.value(), None


def _zstd(data: bytes, cap: int) -> tuple[bytes, str | None]:
    out = _Output(cap)
    reader = zstandard.ZstdDecompressor().stream_reader(data, read_across_frames=True)
    chunk = reader.read(_STEP)
    while chunk:
        out.add(chunk)
        chunk = reader.read(_STEP)
    return out.value(), None


_DECODERS = {"gzip": _gzip, "x-gzip": _gzip, "deflate": _deflate, "br": _brotli, "zstd": _zstd}


# The bodies decoded last, kept: an exchange's events and its --exchanges record decode the same request
# and response one after the other (a gzip answer was decompressed twice). A body is found again only as
# the same object holding the same bytes (compared, not copied); bodies over _RECENT_BYTES are not kept.
_RECENT = 2
_RECENT_BYTES = 8 * 1024 * 1024
_recent: list[tuple[bytes | bytearray, bytes, str | None, int, DecodedBody]] = []


def decode_body(raw: bytes | bytearray, content_encoding: str | None, max_decoded: int = DEFAULT_MAX_DECODED,
                truncated: bool = False) -> DecodedBody:
    """Undo each Content-Encoding in reverse order of application, each under max_decoded."""
    for obj, snapshot, encoding, cap, done in _recent:
        if obj is raw and encoding == content_encoding and cap == max_decoded and snapshot == raw:
            return DecodedBody(done.data, done.encoding, done.error, truncated)
    snapshot = bytes(raw)  # the body itself when it is bytes
    done = _decode_body(snapshot, content_encoding, max_decoded, truncated)
    if len(raw) <= _RECENT_BYTES:
        _recent.insert(0, (raw, snapshot, content_encoding, max_decoded, done))
        del _recent[_RECENT:]
    return DecodedBody(done.data, done.encoding, done.error, truncated)


def _decode_body(raw: bytes, content_encoding: str | None, max_decoded: int, truncated: bool) -> DecodedBody:
    if not content_encoding:  # most bodies: nothing to undo
        return DecodedBody(raw, "", None, truncated)
    chain = [c.strip().lower() for c in content_encoding.split(",") if c.strip()]
    chain = [c for c in chain if c != "identity"]
    encoding = ",".join(chain)
    data, note = raw, None
    for coding in reversed(chain):
        decoder = _DECODERS.get(coding)
        if decoder is None:
            return DecodedBody(raw, encoding, f"unsupported content-encoding {coding}", truncated)
        try:
            data, flagged = decoder(data, max_decoded)
        except BodyTooLarge as exc:
            return DecodedBody(raw, encoding, f"bomb: {coding} body {exc}", truncated)
        except (zlib.error, brotli.error, zstandard.ZstdError, ValueError) as exc:
            return DecodedBody(raw, encoding, f"{coding}: {exc}", truncated)
        note = note or flagged
    return DecodedBody(data, encoding, note, truncated)


@dataclass
class SseEvent:
    event: str  # "message" unless an `event:` field said otherwise
    data: str
    id: str | None = None
    retry: int | None = None


_LINE_END = re.compile(rb"\r\n|\r|\n")


@dataclass
class SseParser:
    """text/event-stream as the WHATWG spec defines it: lines end in CRLF, LF or CR; `data:` lines
    join with newlines; a blank line dispatches; comments start with ':'. Feed any split of bytes.

    One pass over the line ends of each chunk; an unfinished line waits in a buffer of at most
    max_line bytes: the rest of a longer line is dropped and the line counted in truncated_lines."""

    max_line: int = MAX_LINE
    truncated_lines: int = 0
    _buf: bytearray = field(default_factory=bytearray)  # the start of an unfinished line
    _over: bool = False  # the unfinished line passed max_line
    _data: list[str] = field(default_factory=list)
    _event: str = ""
    _id: str | None = None
    _retry: int | None = None
    _saw_cr: bool = False
    _has_fields: bool = False

    def feed(self, chunk: bytes) -> list[SseEvent]:
        if not chunk:
            return []
        if self._saw_cr and chunk[:1] == b"\n":
            chunk = chunk[1:]  # the LF of a CRLF split across two feeds
        self._saw_cr = chunk[-1:] == b"\r"
        if not self._buf and not self._over and b"\r" not in chunk:
            return self._feed_lf(chunk)
        events: list[SseEvent] = []
        start = 0
        for m in _LINE_END.finditer(chunk):
            ev = self._line(self._whole(chunk, start, m.start()))
            if ev:
                events.append(ev)
            start = m.end()
        self._keep(chunk, start, len(chunk))
        return events

    def _feed_lf(self, chunk: bytes) -> list[SseEvent]:
        """feed() of the usual chunk: nothing waiting, lines ending in LF only (what every provider
        sends): split at once instead of line end by line end, with the same lines and events."""
        lines = chunk.split(b"\n")
        rest = lines.pop()  # the unfinished line (empty when the chunk ends a line)
        events: list[SseEvent] = []
        for raw in lines:
            if len(raw) > self.max_line:  # as _whole cuts it
                self.truncated_lines += 1
                raw = raw[:self.max_line]
            if raw[:6] == b"data: ":  # most lines: _line's reading of them, inline
                self._data.append(raw[6:].decode("utf-8", "replace"))
                self._has_fields = True
                continue
            if not raw:  # the blank line after each event: _line's dispatch, inline
                if self._has_fields:
                    events.append(SseEvent(self._event or "message", "\n".join(self._data), self._id,
                                           self._retry))
                    self._data, self._event, self._retry, self._has_fields = [], "", None, False
                continue
            ev = self._line(raw)
            if ev:
                events.append(ev)
        self._keep(chunk, len(chunk) - len(rest), len(chunk))
        return events

    def _keep(self, chunk: bytes, start: int, end: int) -> None:
        room = self.max_line - len(self._buf)
        if end - start > room:
            end = start + room
            if not self._over:
                self._over = True
                self.truncated_lines += 1
        self._buf += chunk[start:end]

    def _whole(self, chunk: bytes, start: int, end: int) -> bytes:
        """The line that ends at chunk[end], with its start from earlier feeds, cut to max_line."""
        if not self._buf and not self._over and end - start <= self.max_line:
            return chunk[start:end]
        self._keep(chunk, start, end)
        line = bytes(self._buf)
        self._buf.clear()
        self._over = False
        return line

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
        """Events still open at the end of the body (dispatched), and whether any were cut off: at
        the end of the body, or by a line longer than max_line."""
        open_ = bool(self._buf.strip()) or self._over or self._has_fields
        events = self.feed(b"\n\n") if open_ else []
        return events, open_ or self.truncated_lines > 0


@lru_cache(maxsize=1)
def split_sse(data: bytes, max_line: int = MAX_LINE) -> tuple[tuple[SseEvent, ...], tuple[SseEvent, ...],
                                                             bool]:
    """A whole SSE body split: (events, events still open at its end, whether any were cut off), as
    SseParser's feed and finish give them. The last body's split is kept: the events and the
    --exchanges record of one exchange split the same decoded body one after the other. (Equal bytes,
    equal split: the events are not to be changed by callers.)"""
    parser = SseParser(max_line=max_line)
    events = parser.feed(data)
    tail, cut = parser.finish()
    return tuple(events), tuple(tail), cut


_NDJSON_BLOCK = 1024 * 1024  # split in C a block at a time, so no copy is larger than this


def split_ndjson(data: bytes, max_line: int = MAX_LINE) -> tuple[list[str], bool]:
    """Lines of an NDJSON body; the second value says whether a line was cut off: the last one by
    the end of the body, or one longer than max_line (kept up to max_line)."""
    lines: list[str] = []
    cut = False
    pos, n = 0, len(data)
    window = max(1, min(_NDJSON_BLOCK, max_line))
    while pos < n:
        stop = data.rfind(b"\n", pos, pos + window) + 1
        if stop > pos:  # whole lines, each shorter than the window and so than max_line
            lines += [ln.decode("utf-8", "replace") for ln in data[pos:stop - 1].split(b"\n") if ln.strip()]
            pos = stop
            continue
        end = data.find(b"\n", pos)  # a line as long as the window or longer
        end = n if end < 0 else end
        line = data[pos:min(end, pos + max_line)]
        if line.strip():
            lines.append(line.decode("utf-8", "replace"))
            cut = cut or end == n
        cut = cut or end - pos > max_line
        pos = end + 1
    return lines, cut
