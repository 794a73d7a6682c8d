"""Typed reads of JSON that any pod may have sent: the value of the expected type at a path, or None.

The format parsers read bodies and stream events only through these, so a field of an unexpected
shape (a number where a list was, a list where a string was, a path through a string) reads as absent
instead of raising. Rules: booleans are not numbers (JSON `true` is no token count), integers are
bounded to +-2**53 (the sinks cannot store 2**70; sums of a few stay in int64), floats are finite,
strings are only ever strings (never `str()` of a dict).
"""

from __future__ import annotations

import math

# the integers a JSON number holds exactly (as a double)
INT_MIN, INT_MAX = -(2**53 - 1), 2**53 - 1

Key = str | int  # a dict key, or a list index


def at(value: object, *path: Key) -> object | None:
    """The value at `path` (dict keys and list indexes), or None when the shape does not fit."""
    if len(path) == 1 and type(value) is dict and type(path[0]) is str:  # the common read: one key
        return value.get(path[0])
    for key in path:
        if isinstance(key, str):
            if not isinstance(value, dict):
                return None
            value = value.get(key)
        elif isinstance(value, list) and -len(value) <= key < len(value):
            value = value[key]
        else:
            return None
    return value


def dict_at(value: object, *path: Key) -> dict | None:
    found = at(value, *path)
    return found if isinstance(found, dict) else None


def list_at(value: object, *path: Key) -> list:
    """The list at `path`, or [] (what the parsers iterate over)."""
    found = at(value, *path)
    return found if isinstance(found, list) else []


def dicts_at(value: object, *path: Key) -> list[dict]:
    """The objects of the list at `path`, skipping items of any other type."""
    return [item for item in list_at(value, *path) if isinstance(item, dict)]


def str_at(value: object, *path: Key) -> str | None:
    found = at(value, *path)
    return found if isinstance(found, str) else None


def int_at(value: object, *path: Key) -> int | None:
    found = at(value, *path)
    return as_int(found)


def as_int(value: object) -> int | None:
    """An integer within +-2**53 that is not a bool, else None."""
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value if INT_MIN <= value <= INT_MAX else None


def as_number(value: object) -> int | float | None:
    """A finite float, or an integer as `as_int`, else None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return as_int(value)


def as_strs(value: object) -> list[str] | None:
    """A list of strings (a lone string counts as a list of one), else None."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    return None


def truthy_str(value: object) -> str | None:
    """A non-empty string, else None (for `x.get(k) or fallback` reads)."""
    return value if isinstance(value, str) and value else None
