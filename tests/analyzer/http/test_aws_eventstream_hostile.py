"""Hostile event-stream bytes: valid CRCs around malformed headers raise EventStreamError (the
module's own error), never IndexError or struct.error, and decoding always moves on."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analyzer.http.aws_eventstream import EventStreamError, decode, encode

CORPUS = Path(__file__).parent / "corpus"
FUZZ = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def message(raw_headers: bytes, payload: bytes = b"{}") -> bytes:
    """A message with any header bytes, and both CRCs right."""
    total = 12 + len(raw_headers) + len(payload) + 4
    prelude = struct.pack(">II", total, len(raw_headers))
    head = prelude + struct.pack(">I", zlib.crc32(prelude)) + raw_headers + payload
    return head + struct.pack(">I", zlib.crc32(head))


@pytest.mark.parametrize("name", ["eventstream_name_past_end", "eventstream_no_type_byte",
                                  "eventstream_type_without_value", "eventstream_string_past_end"])
def test_headers_past_their_end_raise_the_module_error(name):
    body = (CORPUS / f"{name}.bin").read_bytes()  # IndexError (or a short value) before
    assert body == message(body[12:len(body) - 6], b"{}")  # the CRCs are right
    with pytest.raises(EventStreamError, match="runs past the end of the headers"):
        decode(body)


def test_fixed_size_value_cut_short():
    with pytest.raises(EventStreamError):
        decode(message(b"\x02:n\x04\x00\x01"))  # an int header with 2 of its 4 bytes


def test_good_messages_still_decode():
    good = encode({":event-type": "chunk", ":message-type": "event"}, b'{"bytes":"e30="}')
    flags = message(b"\x01t\x00\x01f\x01\x01b\x02\x07\x05uuid!\x09" + bytes(16))
    messages, rest = decode(good + flags + good[:5])
    assert [m.event_type for m in messages] == ["chunk", None] and rest == good[:5]
    assert messages[1].headers == {"t": True, "f": False, "b": b"\x07", "uuid!": bytes(16)}


def _valid_headers() -> st.SearchStrategy[bytes]:
    name = st.binary(min_size=0, max_size=8)
    value = st.one_of(
        st.tuples(st.sampled_from([0, 1]), st.just(b"")),
        st.tuples(st.sampled_from([2, 3, 4, 5, 8, 9]), st.binary(min_size=16, max_size=16)),
        st.tuples(st.sampled_from([6, 7]), st.binary(max_size=20)))

    def one(nv):
        n, (kind, v) = nv
        size = {2: 1, 3: 2, 4: 4, 5: 8, 8: 8, 9: 16}.get(kind)
        body = v[:size] if size is not None else struct.pack(">H", len(v)) + v
        return bytes([len(n)]) + n + bytes([kind]) + body
    return st.lists(st.tuples(name, value).map(one), max_size=4).map(b"".join)


@st.composite
def mutated_streams(draw) -> bytes:
    """Messages whose header bytes were mutated after the fact, with their CRCs made right again,
    so the mutation reaches the header parser."""
    out = b""
    for _ in range(draw(st.integers(1, 3))):
        headers = bytearray(draw(_valid_headers()))
        for _ in range(draw(st.integers(0, 3))):
            op = draw(st.sampled_from(["flip", "cut", "append"]))
            at = draw(st.integers(0, max(0, len(headers) - 1)))
            if op == "flip" and headers:
                headers[at] = draw(st.integers(0, 255))
            elif op == "cut":
                del headers[at:]
            else:
                headers += draw(st.binary(min_size=1, max_size=4))
        out += message(bytes(headers), draw(st.binary(max_size=10)))
    return out


def _decodes_or_raises_own_error(data: bytes) -> None:
    try:
        messages, rest = decode(data)
    except EventStreamError:
        return
    assert data.endswith(rest) and len(rest) <= len(data)
    assert len(messages) <= len(data) // 16  # each message consumed at least 16 bytes


@FUZZ
@given(mutated_streams(), st.integers(0, 40))
def test_fuzz_mutated_headers(data, cut):
    _decodes_or_raises_own_error(data)
    _decodes_or_raises_own_error(data[:len(data) - cut])


@FUZZ
@given(st.binary(max_size=200))
def test_fuzz_random_bytes(data):
    _decodes_or_raises_own_error(data)
    _decodes_or_raises_own_error(message(data))  # random header bytes behind right CRCs
