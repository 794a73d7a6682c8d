"""Check an events file against expectations in the OISP cookbook's format:

    {"minimum_events": 2,
     "events": [{"event_type": "ai.request",
                 "required_fields": {"data.provider.name": "openai", "data.model.id": "*",
                                     "data.usage.total_tokens": "> 0", "process.pid": "integer",
                                     "data.provider.endpoint": "/api\\\\.openai\\\\.com/"}}]}

A matcher is "*" (present), "> N", ">= N", "< N", "<= N", "/regex/", a JSON type name (string,
number, integer, boolean, object, array, null), or any other value, compared exactly. Each entry of
`events` must be met by at least one event of its type."""

from __future__ import annotations

import operator
import re

_MISSING = object()
_OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt}
_COMPARISON = re.compile(r"^(>=|<=|>|<)\s*(-?\d+(?:\.\d+)?)$")
_TYPES = {"string": str, "number": (int, float), "integer": int, "boolean": bool, "object": dict,
          "array": list, "null": type(None)}


class ExpectationsError(ValueError):
    """The expectations file itself is malformed."""


def lookup(event: dict, dotted: str):
    value = event
    for part in dotted.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return _MISSING
    return value


def matches(value, matcher) -> bool:
    if value is _MISSING:
        return False
    if isinstance(matcher, str):
        if matcher == "*":
            return True
        comparison = _COMPARISON.match(matcher)
        if comparison:
            op = _OPS[comparison.group(1)]
            bound = float(comparison.group(2))
            return isinstance(value, (int, float)) and not isinstance(value, bool) and op(value, bound)
        if len(matcher) >= 2 and matcher.startswith("/") and matcher.endswith("/"):
            return isinstance(value, str) and re.search(matcher[1:-1], value) is not None
        if matcher in _TYPES:
            if matcher in ("integer", "number") and isinstance(value, bool):
                return False
            return isinstance(value, _TYPES[matcher])
    return value == matcher


def check(events: list[dict], expected: dict) -> list[str]:
    """What is not met ([] when everything is)."""
    if not isinstance(expected, dict):
        raise ExpectationsError("expectations must be a JSON object")
    failures = []
    minimum = expected.get("minimum_events", 0)
    if len(events) < minimum:
        failures.append(f"expected at least {minimum} events, found {len(events)}")
    for i, exp in enumerate(expected.get("events", [])):
        if not isinstance(exp, dict) or "event_type" not in exp:
            raise ExpectationsError(f"events[{i}] needs an event_type")
        candidates = [e for e in events if e.get("event_type") == exp["event_type"]]
        fields = exp.get("required_fields", {})
        if not candidates:
            failures.append(f"events[{i}]: no {exp['event_type']} event")
            continue
        if any(all(matches(lookup(e, k), m) for k, m in fields.items()) for e in candidates):
            continue
        # say which field failed on the closest candidate
        best = max(candidates, key=lambda e: sum(matches(lookup(e, k), m) for k, m in fields.items()))
        bad = [f"{k} {m!r} (got {'nothing' if lookup(best, k) is _MISSING else repr(lookup(best, k))})"
               for k, m in fields.items() if not matches(lookup(best, k), m)]
        failures.append(f"events[{i}] ({exp['event_type']}): no event meets all fields; closest misses "
                        + "; ".join(bad))
    return failures
