"""JSON parsing within budgets: bodies and stream events come from any pod, so a body larger than
max_bytes is not parsed, and nesting deeper than max_depth is refused before `json.loads` recurses (a
RecursionError would otherwise end the run, or surface later in `json.dumps`). The budgets are the
`analyzer:` keys max_json_bytes and max_json_depth (Limits); MAX_JSON_BYTES and MAX_JSON_DEPTH are
their defaults.

JSON may also escape lone UTF-16 surrogates ("\\ud800"), which no UTF-8 writer or hash can encode:
they are read as U+FFFD.

Refusals raise JsonRefused, a ValueError: callers that treat "not JSON" as "no body" keep doing so,
callers that flag it catch JsonRefused first and note its `reason` (json_too_large, json_too_deep).
"""

from __future__ import annotations

import json
import re

import numpy as np
import orjson

MAX_JSON_BYTES = 32 * 1024 * 1024  # above what the providers accept in one request
MAX_JSON_DEPTH = 128  # real API bodies (tool schemas included) stay far below; json.loads recurses

# a complete JSON string (escapes included), whose brackets are text, not structure
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
# opening brackets step +1, closing ones -1 (0xff as int8)
_STEPS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")
_CHUNK = 1 << 20  # brackets summed at a time, to bound the memory of the running depth
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_SURROGATE_ESCAPE_TEXT = re.compile(r"\\u[dD][89a-fA-F]")
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")  # pairs were joined by json.loads already


class JsonRefused(ValueError):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def too_deep(data: bytes, budget: int = MAX_JSON_DEPTH) -> bool:
    """Whether the bracket nesting of JSON text, outside strings, goes deeper than `budget` (an
    unterminated string's brackets count: that can only overstate text that would not parse)."""
    if data.count(b"[") + data.count(b"{") <= budget:
        return False  # fewer openings than the budget cannot nest deeper than it (the common case)
    brackets = _STRING.sub(b"", data).translate(None, _NOT_BRACKETS)
    steps = np.frombuffer(brackets.translate(_STEPS), dtype=np.int8)
    depth = 0
    for start in range(0, len(steps), _CHUNK):
        running = np.cumsum(steps[start:start + _CHUNK], dtype=np.int64) + depth
        if running.max() > budget:
            return True
        depth = int(running[-1])
    return False


def loads_bounded(data: bytes | str, max_bytes: int = MAX_JSON_BYTES,
                  max_depth: int = MAX_JSON_DEPTH) -> object:
    """json.loads, refusing (JsonRefused) text over the size or depth budget; ValueError when the
    text is not JSON, as json.loads."""
    text = isinstance(data, str)
    if text and 4 * len(data) <= max_bytes and data.count("[") + data.count("{") <= max_depth:
        # within both budgets however it is encoded (UTF-8 takes at most 4 bytes a character, and the
        # brackets are ASCII): the text is not encoded only to be measured (stream events, one by one)
        escaped = "\\u" in data and _SURROGATE_ESCAPE_TEXT.search(data)
    else:
        raw = data.encode("utf-8", "surrogatepass") if text else bytes(data)
        if len(raw) > max_bytes:
            raise JsonRefused("json_too_large")
        if too_deep(raw, max_depth):
            raise JsonRefused("json_too_deep")
        escaped = b"\\u" in raw and _SURROGATE_ESCAPE.search(raw)
    # a RecursionError is not expected under the depth budget (unless one is configured past the
    # interpreter's recursion limit): never let it escape
    try:
        value = _loads(data)
        return _without_lone_surrogates(value) if escaped else value
    except RecursionError:
        raise JsonRefused("json_too_deep") from None


# the C scanner json.loads ends in (after json.decoder.JSONDecoder.decode skips whitespace): called directly
# for one stream event after another, it skips two Python frames and two regex matches each
_SCAN = json.JSONDecoder().scan_once
# orjson reads a body 3x faster than json.loads (4.5 -> 1.3 us for a chat answer) and gives the same value,
# but for integers of 19 digits or more, which may lie beyond 64 bits: it makes those floats where json keeps
# them exact. Text with such a run of digits (anywhere, strings included) goes to json; all it refuses too
# (NaN, lone surrogate escapes, bytes that are not UTF-8: json reads CESU-8 and UTF-16/32), by its error.
_DIGITS_AS_ZERO = bytes.maketrans(b"123456789", b"000000000")
_LONG_DIGITS = b"0" * 19


def _loads(data: bytes | str) -> object:
    """json.loads(data). Bytes without a run of 19 digits are read by orjson, which gives json.loads's value
    (or raises, and json.loads then decides); text the scanner reads whole from its first character is its
    value; anything else (whitespace around the value, what follows it, an error) goes through json.loads,
    which gives the value or raises as it always did."""
    if isinstance(data, bytes):
        if _LONG_DIGITS not in data.translate(_DIGITS_AS_ZERO):
            try:
                return orjson.loads(data)
            except orjson.JSONDecodeError:
                pass
    elif isinstance(data, str):
        try:
            value, end = _SCAN(data, 0)
        except StopIteration:
            pass
        else:
            if end == len(data):
                return value
    return json.loads(data)


def _without_lone_surrogates(value: object) -> object:
    # recursion is bounded by the depth budget
    if isinstance(value, str):
        return _LONE_SURROGATE.sub("\ufffd", value)
    if isinstance(value, list):
        return [_without_lone_surrogates(v) for v in value]
    if isinstance(value, dict):
        return {_LONE_SURROGATE.sub("\ufffd", k): _without_lone_surrogates(v) for k, v in value.items()}
    return value
