"""Header pairs decoded through http1's cache of known pairs equal the plain decoding, whatever the cache
holds: repeated pairs, long ones (not kept), bytes beyond ASCII, and a cache filled past its bound."""

from __future__ import annotations

import random

from analyzer.bounded_dict import BoundedDict
from analyzer.http import http1


def plain(raw) -> list[tuple[str, str]]:
    return [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in raw]


def test_cached_decoding_equals_plain_decoding(monkeypatch):
    monkeypatch.setattr(http1, "_known", BoundedDict(64))  # fills and clears many times over
    rng = random.Random(3)
    names = [b"host", b"Content-Type", b"X-\xc0\xe9", b"authorization", b"x-request-id"]
    for _ in range(5000):
        raw = []
        for _ in range(rng.randint(0, 12)):
            value = bytes(rng.choice((65, 97, 0xE9, 0xFF, 32)) for _ in range(rng.choice((1, 2, 3, 300))))
            raw.append((rng.choice(names), value))
        assert http1._headers(raw) == plain(raw)
        assert len(http1._known) <= 64
    assert all(len(k) + len(v) <= http1._KNOWN_PAIR_BYTES for k, v in http1._known)


def test_no_credential_pair_is_kept(monkeypatch):
    """Pairs whose name says they carry a credential are decoded each time, never kept in the cache: an API
    key is not held beyond its message."""
    from analyzer.http.redaction import is_secret_name

    monkeypatch.setattr(http1, "_known", BoundedDict(http1._known.limit))
    raw = [(b"Authorization", b"Bearer sk-0123456789abcdef"), (b"x-api-key", b"k"), (b"Cookie", b"s=1"),
           (b"host", b"api.openai.com"), (b"content-type", b"application/json")]
    for _ in range(3):
        assert http1._headers(raw) == plain(raw)
    assert sorted(k for k, _ in http1._known) == [b"content-type", b"host"]
    assert not any(is_secret_name(k.decode("latin-1")) for k, _ in http1._known)


def test_head_lines_split_through_the_cache_equal_the_plain_split(monkeypatch):
    """http1_simple._head keeps short header lines split: on seeded heads (repeated lines, long ones, folded
    and malformed ones, credentials, a cache filled past its bound) it gives what it gives with nothing kept,
    keeps no line over its size or with a credential's name, and stays within its bound."""
    from analyzer.http import http1_simple
    from analyzer.http.redaction import is_secret_name

    rng = random.Random(5)
    lines = [b"Host: api.openai.com", b"content-type: application/json",
             b"Authorization: Bearer sk-abcdefgh12",
             b"X-Api-Key: k123", b"User-Agent: " + b"u" * 300, b" folded", b"bad line", b"Content-Length: 2",
             b"x-\xe9: \xff", b"Connection: keep-alive"]
    heads = []
    for _ in range(3000):
        picked = [rng.choice(lines) for _ in range(rng.randint(0, 8))]
        heads.append(b"\r\n".join([b"POST /v1 HTTP/1.1", *picked]) + b"\r\n\r\nhi")
    monkeypatch.setattr(http1_simple, "_lines", BoundedDict(4))  # fills and clears many times over
    cached = [http1_simple._head(h, False) for h in heads]
    kept = http1_simple._lines
    assert kept and len(kept) <= 4
    assert all(len(line) <= http1_simple._KNOWN_LINE_BYTES and not is_secret_name(name.decode("latin-1"))
               for line, (name, _) in kept.items())
    monkeypatch.setattr(http1_simple, "_KNOWN_LINE_BYTES", -1)  # nothing kept
    monkeypatch.setattr(http1_simple, "_lines", BoundedDict(4))
    assert [http1_simple._head(h, False) for h in heads] == cached
    assert http1_simple._lines == {}
    assert sum(c is not None for c in cached) > 100
