"""Exchanges as JSON objects: what `oisp-analyze --exchanges FILE` writes, one per line.

Bodies are decoded (Content-Encoding) and, for event streams and NDJSON, split into events here.
Secret-bearing headers are never written: their values are replaced by a marker.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re

from analyzer.http.bodies import DecodedBody, SseParser, decode_body, split_ndjson
from analyzer.model import Exchange, HttpMessage

SECRET_HEADERS = {"authorization", "proxy-authorization", "x-api-key", "api-key", "x-goog-api-key",
                  "cookie", "set-cookie", "x-amz-security-token", "x-amz-content-sha256"}
REDACTED = "[redacted]"
# query parameters that carry credentials (Gemini's ?key=, OAuth tokens)
QUERY_SECRET = re.compile(r"([?&](?:key|api_key|api-key|access_token|token|sig|signature|x-amz-signature|"
                          r"x-amz-credential|x-amz-security-token)=)[^&]*", re.I)


def redact_path(path: str | None) -> str | None:
    return None if path is None else QUERY_SECRET.sub(r"\1" + REDACTED, path)


# Command lines carry secrets too (`--api-key sk-...`, `OPENAI_API_KEY=...`, curl's
# `-H "Authorization: Bearer ..."`): by option name, by header name, and by the shape of well-known
# key formats anywhere in an argument.
SECRET_NAME = re.compile(r"key|token|secret|passw|auth|credential", re.I)
SECRET_VALUE = re.compile(r"(?:sk-|sk_|xai-|gsk_|hf_|r8_|AKIA|ASIA|AIza|ghp_|glpat-|eyJ)[A-Za-z0-9_\-.]{8,}")
SECRET_HEADER_ARG = re.compile(r"^\s*(authorization|proxy-authorization|x-api-key|api-key|x-goog-api-key"
                               r"|cookie|x-amz-security-token)\s*:.*", re.I | re.S)


def redact_cmdline(args: list[str] | tuple[str, ...]) -> list[str]:
    out: list[str] = []
    value_next = False
    for arg in args:
        name, eq, _ = arg.partition("=")
        if value_next:
            out.append(REDACTED)
            value_next = False
        elif eq and SECRET_NAME.search(name) and not name.startswith("-H"):
            out.append(f"{name}={REDACTED}")
        elif SECRET_HEADER_ARG.match(arg):
            out.append(SECRET_HEADER_ARG.sub(lambda m: f"{m.group(1)}: {REDACTED}", arg))
        else:
            out.append(SECRET_VALUE.sub(REDACTED, arg))
            value_next = arg.startswith("-") and not eq and bool(SECRET_NAME.search(arg))
    return out
# Bodies larger than this are summarized (size and sha256) rather than written out.
MAX_INLINE_BODY = 256 * 1024


def _headers(headers: list[tuple[str, str]]) -> list[list[str]]:
    return [[k, REDACTED if k in SECRET_HEADERS else v] for k, v in headers]


# Magic numbers, for bodies whose headers were not captured (brotli has none).
_MAGIC = {b"\x1f\x8b": "gzip", b"\x28\xb5\x2f\xfd": "zstd"}


def content_encoding(msg: HttpMessage) -> str | None:
    encoding = msg.header("content-encoding")
    if encoding is None and not msg.headers_reliable:
        encoding = next((name for magic, name in _MAGIC.items() if msg.body.startswith(magic)), None)
    return encoding


def _body(msg: HttpMessage, max_decoded: int) -> dict:
    decoded: DecodedBody = decode_body(msg.body, content_encoding(msg), max_decoded,
                                       truncated=not msg.complete)
    out: dict = {"wire_bytes": len(msg.body), "encoding": decoded.encoding or None,
                 "decoded_bytes": len(decoded.data), "error": decoded.error,
                 "sha256": hashlib.sha256(decoded.data).hexdigest()}
    ctype = (msg.header("content-type") or "").split(";")[0].strip().lower()
    if decoded.error is None and ctype == "text/event-stream":
        parser = SseParser()
        events = parser.feed(decoded.data)
        tail, cut = parser.finish()
        out["sse"] = [{"event": e.event, "data": e.data, **({"id": e.id} if e.id is not None else {})}
                      for e in events + tail]
        out["sse_cut_off"] = cut
    elif decoded.error is None and ctype in ("application/x-ndjson", "application/jsonl"):
        out["ndjson"], out["ndjson_cut_off"] = split_ndjson(decoded.data)
    elif len(decoded.data) > MAX_INLINE_BODY:
        out["omitted"] = True
    else:
        try:
            out["text"] = decoded.data.decode("utf-8")
        except UnicodeDecodeError:
            out["base64"] = base64.b64encode(decoded.data).decode()
    return out


def exchange_to_dict(x: Exchange, max_decoded: int = 64 * 1024 * 1024) -> dict:
    c = x.connection
    return {
        "node": c.node, "conn_id": c.conn_id, "pid": c.pid, "comm": c.comm, "role": c.role,
        "server_name": c.server_name, "peer": f"{c.peer_ip}:{c.peer_port}" if c.peer_ip else None,
        "http_version": x.http_version, "sequence": x.sequence, "stream_id": x.stream_id,
        "method": x.method, "authority": x.authority, "path": redact_path(x.path), "status": x.status,
        "informational": x.informational,
        "complete": x.complete,
        "request": {
            "headers": _headers(x.request.headers), "trailers": _headers(x.request.trailers),
            "headers_reliable": x.request.headers_reliable, "complete": x.request.complete,
            "start_ns": x.request.start_ns, "end_ns": x.request.end_ns,
            "body": _body(x.request, max_decoded),
        },
        "response": {
            "headers": _headers(x.response.headers), "trailers": _headers(x.response.trailers),
            "headers_reliable": x.response.headers_reliable, "complete": x.response.complete,
            "first_byte_ns": x.response.start_ns, "end_ns": x.response.end_ns,
            "body": _body(x.response, max_decoded),
        },
        "notes": x.notes,
    }


def dumps(x: Exchange) -> str:
    return json.dumps(exchange_to_dict(x), ensure_ascii=False, sort_keys=True, separators=(",", ":"))
