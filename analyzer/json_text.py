"""Compact JSON text with sorted keys, the form of every line the analyzer writes (events, exchange
records): the bytes `json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))` gives,
made by orjson, several times faster (string escaping and key order agree with json's byte for byte).

Two things orjson writes its own way, and what is done about them:
- floats: orjson writes 1.2e-06 as 1.2e-6 and 5e-05 as 0.00005, NaN as null. A JsonFloat (a float, for
  every other reader) is written with json's text instead. The redaction walk, the last pass over every
  tree the analyzer writes (analyzer/http/redaction.py), turns each float into one, so an output line
  never holds orjson's float text; a plain float given here directly would be written orjson's way;
- what orjson refuses (integers beyond 64 bits, lone surrogates, keys that are not strings, nesting
  deeper than 254, objects of other types): json.dumps writes the whole value, or raises as it did.
"""

from __future__ import annotations

import json

import orjson

_INF = float("inf")


class JsonFloat(float):
    """A float whose JSON text is json's (float.__repr__; NaN, Infinity, -Infinity)."""

    __slots__ = ()


def _float_text(value: float) -> str:
    # json.encoder's floatstr with allow_nan (its default)
    if value != value:
        return "NaN"
    if value == _INF:
        return "Infinity"
    if value == -_INF:
        return "-Infinity"
    return float.__repr__(value)


def _default(value: object) -> orjson.Fragment:
    if type(value) is JsonFloat:
        return orjson.Fragment(_float_text(value))
    raise TypeError  # orjson raises its JSONEncodeError (a TypeError): json.dumps then decides


_SORTED = orjson.OPT_SORT_KEYS


def compact_sorted(value: object) -> str:
    """`json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))`, floats given as
    JsonFloat (module docstring)."""
    try:
        return orjson.dumps(value, default=_default, option=_SORTED).decode()
    except TypeError:
        return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
