"""Exchanges as JSON objects: what `oisp-analyze --exchanges FILE` writes, one per line.

Bodies are decoded (Content-Encoding) and, for event streams and NDJSON, split into events here.
Secrets are never written (analyzer/http/redaction.py): secret-bearing headers and query parameters,
URL userinfo and key-shaped strings anywhere, bodies included, are replaced by a marker. Bodies follow
`--content` as events do: "full" writes them (redacted), "hash" only their size and keyed hash, "none"
only their size.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import replace

from analyzer.http.bodies import DecodedBody, decode_body, split_ndjson, split_sse
from analyzer.http.body_kind import BodyKind, body_kind, content_encoding
from analyzer.http.redaction import redact_authority, redact_headers, redact_text, redact_tree, redact_url
from analyzer.json_text import compact_sorted
from analyzer.model import Exchange, HttpMessage, Limits
from analyzer.sinks.sink import LineFile

# Bodies larger than this are summarized (size and sha256) rather than written out.
MAX_INLINE_BODY = 256 * 1024


def _body(msg: HttpMessage, limits: Limits, content: str = "full", hash_key: bytes | None = None) -> dict:
    decoded: DecodedBody = decode_body(msg.body, content_encoding(msg), limits.max_decoded_body_bytes,
                                       truncated=not msg.complete)
    out: dict = {"wire_bytes": len(msg.body), "encoding": decoded.encoding or None,
                 "decoded_bytes": len(decoded.data), "error": decoded.error}
    if content != "full":
        # a plain sha256 of a short body can be guessed: only a keyed hash, and only with "hash"
        if content == "hash" and hash_key is not None:
            out["hash"] = "hmac-sha256:" + hmac.new(hash_key, decoded.data, hashlib.sha256).hexdigest()[:16]
        return out
    out["sha256"] = hashlib.sha256(decoded.data).hexdigest()
    # By the headers only (no bytes): a stream is split here only when its Content-Type says so. The
    # event builder also sniffs `data:` when the headers were not captured; doing it here would change
    # the --exchanges output of recorded HTTP/2 streams joined mid-connection (they stay "text").
    # NDJSON is the shared list, application/ndjson included; AWS event-stream frames are not split here.
    kind = body_kind(msg)
    if decoded.error is None and kind is BodyKind.SSE:
        events, tail, cut = split_sse(decoded.data, limits.max_event_line_bytes)
        out["sse"] = [{"event": e.event, "data": e.data} if e.id is None else
                      {"event": e.event, "data": e.data, "id": e.id} for e in events + tail]
        out["sse_cut_off"] = cut
    elif decoded.error is None and kind is BodyKind.NDJSON:
        out["ndjson"], out["ndjson_cut_off"] = split_ndjson(decoded.data, limits.max_event_line_bytes)
    elif len(decoded.data) > MAX_INLINE_BODY:
        out["omitted"] = True
    else:
        try:
            out["text"] = decoded.data.decode("utf-8")
        except UnicodeDecodeError:
            # binary (protobuf, gRPC) can hold a key too: the ASCII shapes are found byte for byte
            data = redact_text(decoded.data.decode("latin-1")).encode("latin-1")
            out["base64"] = base64.b64encode(data).decode()
    return out


def exchange_to_dict(x: Exchange, max_decoded: int | None = None, content: str = "full",
                     hash_key: bytes | None = None, limits: Limits | None = None) -> dict:
    """An exchange as written: every string redacted (redaction.redact_tree), bodies by `content`,
    decoded and split under `limits` (max_decoded: an older override of max_decoded_body_bytes)."""
    limits = limits or Limits()
    if max_decoded is not None:
        limits = replace(limits, max_decoded_body_bytes=max_decoded)
    c = x.connection
    record = {
        "node": c.node, "conn_id": c.conn_id, "pid": c.pid, "comm": c.comm, "role": c.role,
        "server_name": c.server_name, "peer": f"{c.peer_ip}:{c.peer_port}" if c.peer_ip else None,
        "http_version": x.http_version, "sequence": x.sequence, "stream_id": x.stream_id,
        "method": x.method, "authority": redact_authority(x.authority), "path": redact_url(x.path),
        "status": x.status,
        "informational": x.informational,
        "complete": x.complete,
        "request": {
            "headers": redact_headers(x.request.headers), "trailers": redact_headers(x.request.trailers),
            "headers_reliable": x.request.headers_reliable, "complete": x.request.complete,
            "start_ns": x.request.start_ns, "end_ns": x.request.end_ns,
            "body": _body(x.request, limits, content, hash_key),
        },
        "response": {
            "headers": redact_headers(x.response.headers), "trailers": redact_headers(x.response.trailers),
            "headers_reliable": x.response.headers_reliable, "complete": x.response.complete,
            "first_byte_ns": x.response.start_ns, "end_ns": x.response.end_ns,
            "body": _body(x.response, limits, content, hash_key),
        },
        "notes": x.notes,
    }
    # only when something raised, so that records of exchanges parsed as expected stay as they were
    error = x.connection.parse_error or x.parse_error
    if error is not None:
        record["parse_error"] = error
    return redact_tree(record)


def dumps(x: Exchange, content: str = "full", hash_key: bytes | None = None,
          limits: Limits | None = None) -> str:
    return compact_sorted(exchange_to_dict(x, content=content, hash_key=hash_key, limits=limits))


class ExchangesFile(LineFile):
    """The --exchanges output: one line per exchange; bodies as `content` says (full, hash, none),
    decoded and split under `limits` (max_decoded_body_bytes, max_event_line_bytes)."""

    def __init__(self, path, content: str = "full", hash_key: bytes | None = None,
                 limits: Limits | None = None):
        super().__init__(path)
        self.content = content
        self.hash_key = hash_key
        self.limits = limits or Limits()

    def write_exchange(self, x: Exchange) -> None:
        self.write_line(dumps(x, self.content, self.hash_key, self.limits))
