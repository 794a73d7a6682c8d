"""DATA frames read without hyperframe (http2.plain_data_frame, and a write of one whole DATA frame
without the buffer) give what hyperframe's reading gives: on seeded connections mixing plain, padded,
empty, stream-0, reserved-bit and header-block-interrupting DATA frames with HEADERS, CONTINUATION,
RST_STREAM and unknown frames, cut into writes at random or frame by frame, some writes lost,
Http2Connection hands out the same exchanges and notes with the shortcut turned off."""

from __future__ import annotations

import dataclasses
import random

import hpack

from analyzer.http import http2
from analyzer.http.http2 import CLIENT_PREFACE, Http2Connection
from analyzer.model import ConnectionInfo


def frame(kind: int, flags: int, sid: int, payload: bytes) -> bytes:
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + sid.to_bytes(4, "big") + payload


def conn() -> ConnectionInfo:
    return ConnectionInfo("n", "1-1-1", 1, 1, "client", 0, 0, "/lib/libssl.so.3", seen_from_start=True)


def streams(rng: random.Random) -> tuple[bytes, bytes]:
    """The request and response byte streams of one connection."""
    enc_c, enc_s = hpack.Encoder(), hpack.Encoder()
    egress, ingress = CLIENT_PREFACE + frame(4, 0, 0, b""), frame(4, 0, 0, b"")
    for sid in range(1, 2 * rng.randint(1, 4), 2):
        egress += frame(1, 0x4, sid, enc_c.encode([(":method", "POST"), (":path", "/v1/chat/completions"),
                                                   (":scheme", "https"), (":authority", "api.openai.com")]))
        egress += frame(0, 0x1, sid, b'{"model": "m", "messages": []}')
        block = enc_s.encode([(":status", "200"), ("content-type", "text/event-stream")])
        if rng.random() < 0.2:  # a block in two, maybe interrupted by DATA
            ingress += frame(1, 0, sid, block[:2])
            if rng.random() < 0.5:
                ingress += frame(0, 0, sid, b"data: early\n\n")
            ingress += frame(9, 0x4, sid, block[2:])
        else:
            ingress += frame(1, 0x4, sid, block)
        for i in range(rng.randint(0, 12)):
            payload = b'data: {"choices": [{"delta": {"content": "w%d"}}]}\n\n' % i
            roll = rng.random()
            if roll < 0.1:  # padded (sometimes over-padded)
                pad = rng.randint(0, 8)
                body = bytes([pad if rng.random() < 0.8 else 250]) + payload + b"\0" * pad
                ingress += frame(0, 0x8, sid, body)
            elif roll < 0.15:
                ingress += frame(0, 0, 0, payload)  # DATA on stream 0
            elif roll < 0.2:
                ingress += frame(0, 0, sid | 0x80000000, payload)  # the reserved bit set
            elif roll < 0.25:
                ingress += frame(0, rng.choice([0x2, 0x20, 0xf6]), sid, payload)  # undefined flags
            elif roll < 0.3:
                ingress += frame(0xb, 0, sid, b"?")  # an unknown frame type
            elif roll < 0.33:
                ingress += frame(3, 0, sid, (8).to_bytes(4, "big"))  # RST_STREAM
            else:
                ingress += frame(0, 0, sid, payload if rng.random() < 0.9 else b"")
        ingress += frame(0, 0x1, sid, b"data: [DONE]\n\n")
    return egress, ingress


def run(egress: bytes, ingress: bytes, cuts: list[int], gaps: set[int]) -> list:
    h = Http2Connection(conn(), start_seen=True)
    h.feed_request(egress, 1)
    pos, ts = 0, 2
    for i, cut in enumerate(cuts + [len(ingress)]):
        if i in gaps:  # the write is lost: frames are sought again after it
            h.gap("response", cut - pos, "missing")
        else:
            h.feed_response(ingress[pos:cut], ts)
        pos, ts = cut, ts + 1
    return [[dataclasses.asdict(x) for x in h.finish()], h.notes, dataclasses.asdict(h.conn)]


def test_plain_data_frames_read_as_hyperframe_reads_them(monkeypatch):
    rng = random.Random(5)
    cases = []
    for _ in range(400):
        egress, ingress = streams(rng)
        if rng.random() < 0.5:  # a write per frame, as an application writes a streamed token
            cuts, pos = [], 0
            while pos < len(ingress):
                pos += 9 + int.from_bytes(ingress[pos:pos + 3], "big")
                cuts.append(pos)
            cuts = cuts[:-1]
        else:
            cuts = sorted(rng.sample(range(1, len(ingress)), min(len(ingress) - 1, rng.randint(0, 20))))
        gaps = {i for i in range(len(cuts)) if rng.random() < 0.03}
        cases.append((egress, ingress, cuts, gaps))
    fast = [run(*c) for c in cases]
    assert any(x["response"]["body"] for r in fast for x in r[0])  # bodies were read
    monkeypatch.setattr(http2, "plain_data_frame", lambda buf, pos: None)
    for c, expected in zip(cases, fast, strict=True):
        assert run(*c) == expected


def test_what_is_a_plain_data_frame():
    assert http2.plain_data_frame(frame(0, 0x1, 3, b"x"), 0) == (3, True)
    assert http2.plain_data_frame(frame(0, 0x20, 0x80000005, b"x"), 0) == (5, False)
    assert http2.plain_data_frame(frame(0, 0x8, 3, b"\0x"), 0) is None  # padded
    assert http2.plain_data_frame(frame(0, 0, 0, b"x"), 0) is None  # stream 0: hyperframe refuses it
    assert http2.plain_data_frame(frame(1, 0x4, 3, b"x"), 0) is None  # HEADERS
