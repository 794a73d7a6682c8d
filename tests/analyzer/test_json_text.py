"""The JSON lines writer (analyzer/json_text.py) gives json.dumps's bytes for every tree the redaction walk
hands it: floats of every magnitude, NaN and infinities, every character, integers beyond 64 bits, lone
surrogates, keys that are not strings, deep nesting, tuples."""

from __future__ import annotations

import json
import math
import random
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analyzer.http.redaction import redact_event, redact_tree
from analyzer.json_text import JsonFloat, compact_sorted


def reference(value) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def floats(rng: random.Random, n: int) -> list[float]:
    """Any bit pattern (NaN payloads, subnormals, infinities), decimals of every scale, costs' shapes."""
    out = [0.0, -0.0, math.inf, -math.inf, math.nan, 1e16, 1e15, 1e-4, 1e-5, 5e-324, 1.7976931348623157e308,
           9999999999999998.0, 1.35e-06, 7.058100000000001e-05]
    for _ in range(n):
        r = rng.random()
        if r < 0.3:
            out.append(struct.unpack("d", struct.pack("Q", rng.getrandbits(64)))[0])
        elif r < 0.6:
            out.append(round(rng.uniform(-1, 1) * 10 ** rng.randint(-12, 20), rng.randint(0, 12)))
        else:
            out.append(rng.randint(0, 10**6) * 10.0 ** rng.randint(-12, 18))
    return out


def test_every_float_is_written_as_json_writes_it():
    values = floats(random.Random(7), 50_000)
    # orjson's own text differs for thousands of these (1.2e-6, 0.00005, null for NaN): the walk's
    # JsonFloat is what makes them equal
    assert sum(reference(v) != compact_sorted(v) for v in values) > 1000
    assert [compact_sorted(JsonFloat(v)) for v in values] == [reference(v) for v in values]
    tree = {"usage": [{"cost": v} for v in values]}
    assert compact_sorted(redact_tree(tree)) == reference(tree)


def test_every_character_is_escaped_as_json_escapes_it():
    text = "".join(chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF)
    for i in range(0, len(text), 4096):
        piece = {text[i:i + 64]: text[i:i + 4096]}
        assert compact_sorted(piece) == reference(piece)


@pytest.mark.parametrize("value", [
    2**64 - 1, 2**64, -(2**63) - 1, 10**400,  # beyond 64 bits: json writes them
    "lone \ud800 surrogate", {"k\udfff": 1},
    {1: "int key"}, {True: 1}, {None: 1}, {2.5e-07: 1},
    (1, "two", 3.5e-07), [[[[[[[[]]]]]]]],
])
def test_what_orjson_refuses_or_writes_its_way_is_written_as_json_writes_it(value):
    walked = redact_tree(value)
    assert compact_sorted(walked) == reference(walked) == reference(value)


def test_nesting_beyond_orjson_s_limit():
    deep: list = []
    for _ in range(400):
        deep = [deep, 1.5e-07]
    walked = redact_tree({"d": deep})
    assert compact_sorted(walked) == reference(walked)


def test_what_json_cannot_write_raises_as_json_raises():
    for value in ({"a": object()}, {1: 1, "a": 2}):
        with pytest.raises(TypeError):
            reference(value)
        with pytest.raises(TypeError):
            compact_sorted(value)


json_trees = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(),
    lambda children: st.lists(children, max_size=5) | st.tuples(children, children)
    | st.dictionaries(st.text(max_size=8), children, max_size=5),
    max_leaves=40)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tree=json_trees, content=st.sampled_from(["full", "hash", "none"]))
def test_walked_trees_are_written_as_json_writes_them(tree, content):
    walked = redact_tree(tree)
    assert compact_sorted(walked) == reference(walked)
    event = redact_event({"data": {"messages": [{"content": tree}], "x": tree}, "attrs": tree}, content)
    assert compact_sorted(event) == reference(event)


def test_the_walk_makes_every_float_a_json_float():
    tree = {"a": 1.5, "b": [2.5, {"c": (3.5,)}], "d": {"messages": [{"content": 4.5}]}, "e": True, "f": 2}
    found = []

    def visit(v):
        if isinstance(v, dict):
            for x in v.values():
                visit(x)
        elif isinstance(v, list):
            for x in v:
                visit(x)
        elif isinstance(v, float):
            found.append(type(v))
        else:
            assert type(v) in (bool, int, str, type(None)), v

    for walked in (redact_tree(tree), redact_event({"data": tree, "attrs": tree}, "full"),
                   redact_event({"data": tree}, "hash")):
        found.clear()
        visit(walked)
        assert found and set(found) == {JsonFloat}


def test_trees_orjson_can_write_do_not_fall_back_to_json(monkeypatch):
    tree = redact_tree({"usage": {"cost": 1.35e-06, "nan": math.nan}, "text": "é\n\x00\"", "n": 2**64 - 1})
    expected = reference(tree)
    monkeypatch.setattr(json, "dumps", lambda *a, **k: pytest.fail("fell back to json.dumps"))
    assert compact_sorted(tree) == expected
