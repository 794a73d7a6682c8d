"""One decision of what a body is, shared by the exchanges writer and the AI event builder."""

from __future__ import annotations

import gzip

import pytest

from analyzer.http.body_kind import BodyKind, body_kind, content_encoding, media_type
from analyzer.model import HttpMessage


def _msg(ctype: str | None = None, body: bytes = b"", reliable: bool = True) -> HttpMessage:
    headers = [("content-type", ctype)] if ctype is not None else []
    return HttpMessage(headers=headers, body=bytearray(body), headers_reliable=reliable)


@pytest.mark.parametrize("ctype, kind", [
    ("text/event-stream", BodyKind.SSE),
    ("Text/Event-Stream; charset=utf-8", BodyKind.SSE),
    ("application/x-ndjson", BodyKind.NDJSON),
    ("application/jsonl", BodyKind.NDJSON),
    ("application/ndjson", BodyKind.NDJSON),
    ("application/vnd.amazon.eventstream", BodyKind.AWS_EVENTSTREAM),
    ("application/json", BodyKind.JSON),
    ("application/json; charset=utf-8", BodyKind.JSON),
    ("application/problem+json", BodyKind.JSON),
    ("text/plain", BodyKind.OTHER),
    (None, BodyKind.OTHER),
])
def test_kind_by_content_type(ctype, kind):
    assert body_kind(_msg(ctype)) is kind
    assert body_kind(_msg(ctype), b"data: {}\n\n") is kind  # headers captured: the bytes do not count


def test_event_stream_without_headers_shows_by_its_bytes():
    sse = b'data: {"a": 1}\n\n'
    assert body_kind(_msg(None, sse, reliable=False), sse) is BodyKind.SSE
    # without the bytes (the exchanges writer), the headers alone decide
    assert body_kind(_msg(None, sse, reliable=False)) is BodyKind.OTHER
    assert body_kind(_msg(None, b"{}", reliable=False), b"{}") is BodyKind.OTHER
    # a declared type wins over the sniffing
    assert body_kind(_msg("application/x-ndjson", sse, reliable=False), sse) is BodyKind.NDJSON


def test_media_type_and_content_encoding():
    assert media_type(_msg("Application/JSON ; charset=utf-8")) == "application/json"
    assert media_type(_msg()) == ""
    assert content_encoding(HttpMessage(headers=[("content-encoding", "br")])) == "br"
    zipped = gzip.compress(b"{}")
    assert content_encoding(HttpMessage(body=bytearray(zipped))) is None  # headers captured, none said
    assert content_encoding(HttpMessage(body=bytearray(zipped), headers_reliable=False)) == "gzip"
