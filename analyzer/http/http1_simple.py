"""The common HTTP/1.1 message, whole in one captured write, parsed without h11's state machine.

Most exchanges on a keep-alive or short connection are one write each way: a request with a
Content-Length body (or none), a response with a Content-Length body, nothing else in the write. For
those, driving two h11 connections in lockstep (analyzer/http/http1.py) cost more than everything else
the analyzer does with the exchange. `simple_request` and `simple_response` (sans-IO: bytes in, a
parsed message or None out) accept only what h11 would parse into exactly these events, judged with
h11's own line patterns: a Request or Response, at most one Data holding the rest of the write, an
EndOfMessage without trailers, and no state h11 would carry to the next message (keep-alive HTTP/1.1,
no switch of protocol, no body framed by the end of the connection). Anything else is None, and the
caller hands the bytes to h11 as before: the fast path is only ever a shortcut to the same result.
"""

from __future__ import annotations

from dataclasses import dataclass

from h11._readers import header_field_re, request_line_re, status_line_re

from analyzer.bounded_dict import BoundedDict
from analyzer.http.redaction import is_secret_name

# larger heads go through h11 (its limit for a head still incomplete is MAX_HEADER_BYTES, http1.py)
MAX_SIMPLE_HEAD = 64 * 1024
MAX_LENGTH_DIGITS = 18  # h11 refuses more than 20; fewer here keeps clear of any version's limit


@dataclass(frozen=True, slots=True)
class SimpleMessage:
    """A whole message: its start line's parts, headers (names lower-cased, in order) and body."""

    method: bytes  # requests ("" for a response)
    target: bytes
    status: int  # responses (0 for a request)
    headers: list[tuple[bytes, bytes]]
    body: bytes


# header lines repeat from message to message (host, content-type, user-agent): short ones are kept split, up
# to 16,384 of them (then forgotten all at once: a bound, not a policy); never a line whose name says it
# carries a credential (authorization, x-api-key, cookie): those are not kept beyond their message
_KNOWN_LINE_BYTES = 256
_lines: BoundedDict = BoundedDict(1 << 14)


def _head(data: bytes, body_required: bool) -> tuple[bytes, list[tuple[bytes, bytes]], bytes] | None:
    """(start line, headers, body) of a write holding exactly one message framed by Content-Length (or,
    unless body_required, by no body header at all); None for anything else."""
    end = data.find(b"\r\n\r\n")
    if end <= 0 or end > MAX_SIMPLE_HEAD:
        return None
    head = data[:end]
    # CRLF line ends only: h11 also splits on a bare LF, and its blank line may then come earlier
    crlf = head.count(b"\r\n")
    if head.count(b"\r") != crlf or head.count(b"\n") != crlf:
        return None
    lines = head.split(b"\r\n")
    headers = []
    length = None
    for line in lines[1:]:
        pair = _lines.get(line)
        if pair is None:
            m = header_field_re.fullmatch(line)  # a folded line (leading space) does not match: h11 joins it
            if m is None:
                return None
            pair = m.group("field_name").lower(), m.group("field_value")
            if len(line) <= _KNOWN_LINE_BYTES and not is_secret_name(pair[0].decode("latin-1")):
                _lines.keep(line, pair)
        name, value = pair
        if name == b"content-length":
            if length is not None or not value.isdigit() or len(value) > MAX_LENGTH_DIGITS:
                return None
            length = int(value)
        elif name in (b"transfer-encoding", b"upgrade") or (name == b"connection"
                                                            and b"close" in value.lower()):
            return None
        headers.append((name, value))
    if length is None and body_required:
        return None  # a response without Content-Length is read until the connection closes
    body = data[end + 4:]
    if len(body) != (length or 0):
        return None  # the body continues in later writes, or another message follows in this one
    return lines[0], headers, body


def simple_request(data: bytes) -> SimpleMessage | None:
    """A keep-alive HTTP/1.1 request whole in `data`, as h11's server role would read it; else None."""
    parts = _head(data, body_required=False)
    if parts is None:
        return None
    line, headers, body = parts
    m = request_line_re.fullmatch(line)
    if m is None or m.group("http_version") != b"1.1" or m.group("method") == b"CONNECT":
        return None
    if sum(1 for k, _ in headers if k == b"host") != 1:
        return None  # h11 refuses an HTTP/1.1 request without a Host, or with two
    return SimpleMessage(m.group("method"), m.group("target"), 0, headers, body)


def simple_response(data: bytes, method: str | None) -> SimpleMessage | None:
    """A keep-alive HTTP/1.1 final response with a Content-Length body whole in `data`, to a request of
    `method`, as h11's client role would read it; else None (1xx, 204, 304 and answers to HEAD frame
    their bodies otherwise)."""
    if method == "HEAD":
        return None
    parts = _head(data, body_required=True)
    if parts is None:
        return None
    line, headers, body = parts
    m = status_line_re.fullmatch(line)
    if m is None or m.group("http_version") != b"1.1":
        return None
    status = int(m.group("status_code"))
    if status < 200 or status in (204, 304):
        return None
    return SimpleMessage(b"", b"", status, headers, body)
