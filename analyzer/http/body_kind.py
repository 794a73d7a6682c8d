"""What a message's body is: its Content-Encoding, and what kind of payload it carries (an event
stream, NDJSON lines, AWS event-stream frames, JSON, anything else). Decided here once, from the
headers and, where the headers were not captured, from the bytes; the exchanges writer
(analyzer/sinks/exchanges_jsonl.py) and the AI event builder (analyzer/ai/exchange_events.py) both ask.
"""

from __future__ import annotations

from enum import Enum

from analyzer.model import HttpMessage

# Magic numbers, for bodies whose headers were not captured (brotli has none).
_MAGIC = {b"\x1f\x8b": "gzip", b"\x28\xb5\x2f\xfd": "zstd"}

SSE_TYPES = ("text/event-stream",)
NDJSON_TYPES = ("application/x-ndjson", "application/jsonl", "application/ndjson")
AWS_EVENTSTREAM_TYPES = ("application/vnd.amazon.eventstream",)


class BodyKind(Enum):
    SSE = "sse"  # text/event-stream
    NDJSON = "ndjson"  # one JSON value per line
    AWS_EVENTSTREAM = "aws-eventstream"  # binary frames (Bedrock's streaming responses)
    JSON = "json"  # declared JSON
    OTHER = "other"  # anything else; it may still be JSON mislabelled, or its headers were not captured


def content_encoding(msg: HttpMessage) -> str | None:
    encoding = msg.header("content-encoding")
    if encoding is None and not msg.headers_reliable:
        encoding = next((name for magic, name in _MAGIC.items() if msg.body.startswith(magic)), None)
    return encoding


def media_type(msg: HttpMessage) -> str:
    """The Content-Type without its parameters, lower case ("" when absent)."""
    return (msg.header("content-type") or "").split(";")[0].strip().lower()


def body_kind(msg: HttpMessage, decoded: bytes | None = None) -> BodyKind:
    """The kind of the message's body. `decoded` (the body after Content-Encoding) is looked at only
    when the headers are unreliable (capture joined mid-connection): an event stream then shows by
    its first bytes. Without it, the headers alone decide."""
    ctype = media_type(msg)
    if ctype in AWS_EVENTSTREAM_TYPES:
        return BodyKind.AWS_EVENTSTREAM
    if ctype in NDJSON_TYPES:
        return BodyKind.NDJSON
    sniffed_sse = decoded is not None and not msg.headers_reliable and decoded.startswith(b"data:")
    if ctype in SSE_TYPES or sniffed_sse:
        return BodyKind.SSE
    if ctype == "application/json" or ctype.endswith("+json"):
        return BodyKind.JSON
    return BodyKind.OTHER
