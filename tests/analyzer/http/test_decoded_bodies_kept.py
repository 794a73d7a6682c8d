"""decode_body keeps the bodies it decoded last (an exchange's events and its record decode the same two):
found again only as the same object holding the same bytes, and then equal to decoding anew."""

from __future__ import annotations

import gzip

from analyzer.http import bodies
from analyzer.http.bodies import decode_body


def counting(monkeypatch) -> list[bytes]:
    calls: list[bytes] = []
    real = bodies._decode_body

    def count(raw, *args):
        calls.append(raw)
        return real(raw, *args)

    monkeypatch.setattr(bodies, "_decode_body", count)
    monkeypatch.setattr(bodies, "_recent", [])
    return calls


def test_a_body_decoded_again_is_taken_from_what_was_kept(monkeypatch):
    calls = counting(monkeypatch)
    request, response = bytearray(b'{"model":"m"}'), bytearray(gzip.compress(b'{"id":"x"}' * 50))
    first = [decode_body(request, None), decode_body(response, "gzip", 1 << 20, truncated=True)]
    again = [decode_body(request, None, truncated=True), decode_body(response, "gzip", 1 << 20)]
    assert len(calls) == 2
    assert (again[0].data, again[0].encoding, again[0].error, again[0].truncated) == \
        (first[0].data, first[0].encoding, first[0].error, True)
    assert again[1].data == b'{"id":"x"}' * 50 and again[1].encoding == "gzip" and not again[1].truncated
    assert again[1] is not first[1]  # each caller has its own


def test_changed_bytes_other_objects_caps_and_encodings_are_decoded_anew(monkeypatch):
    calls = counting(monkeypatch)
    body = bytearray(b"abc")
    decode_body(body, None)
    body += b"d"  # appended (a body still being read)
    assert decode_body(body, None).data == b"abcd"
    body[0:1] = b"X"  # changed in place, same length
    assert decode_body(body, None).data == b"Xbcd"
    assert decode_body(bytearray(b"Xbcd"), None).data == b"Xbcd"  # equal bytes, another message
    assert decode_body(body, "identity").data == b"Xbcd"
    assert decode_body(body, None, 2).data == b"Xbcd"
    assert len(calls) == 6
    assert len(bodies._recent) == bodies._RECENT


def test_large_bodies_are_not_kept(monkeypatch):
    calls = counting(monkeypatch)
    big = bytes(bodies._RECENT_BYTES + 1)
    decode_body(big, None)
    decode_body(big, None)
    assert len(calls) == 2 and bodies._recent == []
