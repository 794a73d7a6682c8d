"""Properties of the analyzer on real recorded streams: the result does not depend on how the
stream was cut into chunks or in which order chunks arrive; truncated, garbled and mid-connection
input is reported, never raised."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers.analyzer_inputs import analyze_rows, fixture_streams, rows_for, rows_from_time

STREAMS = {name: fixture_streams(name) for name in ("h1", "h2")}
BASELINE = {name: analyze_rows(rows_for(s)) for name, s in STREAMS.items()}
SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def without_times(xs: list[dict]) -> list[dict]:
    def strip(d):
        if isinstance(d, dict):
            return {k: strip(v) for k, v in d.items() if not k.endswith("_ns")}
        if isinstance(d, list):
            return [strip(v) for v in d]
        return d

    return strip(xs)


@pytest.mark.parametrize("name", ["h1", "h2"])
@SETTINGS
@given(data=st.data())
def test_random_chunk_boundaries_give_identical_exchanges(name, data):
    s = STREAMS[name]
    cuts = {}
    for direction in ("egress", "ingress"):
        size = len(s[direction][0])
        n = data.draw(st.integers(min_value=0, max_value=60), label=f"{direction} cuts")
        cuts[direction] = sorted(data.draw(st.lists(st.integers(1, size - 1), min_size=n, max_size=n)))
    got = analyze_rows(rows_for(s, cuts))
    assert without_times(got) == without_times(BASELINE[name])
    assert all(x["complete"] for x in got)


@pytest.mark.parametrize("name", ["h1", "h2"])
@SETTINGS
@given(seed=st.integers(0, 2**32 - 1))
def test_shuffled_chunk_order_gives_identical_exchanges(name, seed):
    # holds while a connection's bytes before its protocol is known fit analyzer.max_undetected_bytes
    # (4 MiB; these fixtures carry 0.3 and 1.4 MB): past it the protocol is decided on what came
    rows = rows_for(STREAMS[name])
    head, data_rows = rows[:1], rows[1:]  # the `open` row precedes data, as the recorder writes it
    random.Random(seed).shuffle(data_rows)
    assert analyze_rows(head + data_rows) == BASELINE[name]


@pytest.mark.parametrize("name", ["h1", "h2"])
@SETTINGS
@given(data=st.data())
def test_truncated_streams_are_incomplete_not_errors(name, data):
    s = STREAMS[name]
    direction = data.draw(st.sampled_from(["egress", "ingress"]))
    buf, marks = s[direction]
    keep = data.draw(st.integers(0, len(buf) - 1))
    truncated = dict(s)
    truncated[direction] = [buf[:keep], [m for m in marks if m[0] < keep] or marks[:1]]
    got = analyze_rows(rows_for(truncated))
    # nothing made up: whatever is reported complete is exactly what the whole stream gave, but for the
    # notes, which may say how the cut capture was completed ("complete by content-length; END_STREAM
    # not seen" when the cut fell just before the END_STREAM frame)
    base = {(x["stream_id"], x["sequence"]): x for x in without_times(BASELINE[name])}
    for x in without_times(got):
        if x["complete"]:
            assert {**x, "notes": None} == {**base[(x["stream_id"], x["sequence"])], "notes": None}
    # and a cut well inside the traffic always shows
    if keep < len(buf) // 2:
        assert any(not x["complete"] for x in got) or len(got) < len(BASELINE[name])


@SETTINGS
@given(egress=st.binary(min_size=0, max_size=3000), ingress=st.binary(min_size=0, max_size=3000),
       start=st.booleans())
def test_garbage_never_raises(egress, ingress, start):
    s = {"meta": STREAMS["h1"]["meta"], "egress": [bytearray(egress), [(0, 1)]],
         "ingress": [bytearray(ingress), [(0, 2)]]}
    for prefix in (b"", b"POST / HTTP/1.1\r\n", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"):
        s["egress"][0] = bytearray(prefix + egress)
        for x in analyze_rows(rows_for(s, seen_from_start=start)):
            assert isinstance(x["notes"], list)


@pytest.mark.parametrize("name", ["h1", "h2"])
@SETTINGS
@given(data=st.data())
def test_capture_started_mid_connection(name, data):
    """A recorder started while the connection was open: no preface or SETTINGS, HPACK tables
    unknown. Later exchanges are still reported, headers marked unreliable where they could not be
    known, and no body is attributed to the wrong request."""
    s = STREAMS[name]
    marks = s["egress"][1]
    t = data.draw(st.sampled_from([ts for _, ts in marks[1:]]))
    got = analyze_rows(rows_from_time(s, t))
    base = BASELINE[name]
    assert got, "nothing recovered"
    by_key = {(x["stream_id"], x["path"]): x for x in base}
    for x in got:
        if x["path"] is None:
            assert x["request"]["headers_reliable"] is False
            continue
        if name == "h2":
            b = by_key.get((x["stream_id"], x["path"]))
        else:
            start = x["request"]["start_ns"]
            b = next((b for b in base if b["path"] == x["path"] and b["request"]["start_ns"] == start), None)
        assert b is not None, f"an exchange that never happened: {x['path']}"
        if x["complete"]:
            assert x["response"]["body"]["sha256"] == b["response"]["body"]["sha256"]
            assert x["status"] == b["status"]
    if name == "h2":
        assert all(not x["request"]["headers_reliable"] for x in got)
    # the last exchange began after the recorder did: it is always recovered whole
    last = base[-1]
    assert any(x["complete"] and x["response"]["body"]["sha256"] == last["response"]["body"]["sha256"]
               for x in got)
