"""Header pairs decoded through http1's cache of known pairs equal the plain decoding, whatever the cache
holds: repeated pairs, long ones (not kept), bytes beyond ASCII, and a cache filled past its bound."""

from __future__ import annotations

import random

from analyzer.http import http1


def plain(raw) -> list[tuple[str, str]]:
    return [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in raw]


def test_cached_decoding_equals_plain_decoding(monkeypatch):
    monkeypatch.setattr(http1, "_KNOWN_SIZE", 64)  # fills and clears many times over
    monkeypatch.setattr(http1, "_known", {})
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
