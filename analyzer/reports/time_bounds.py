"""The bounds of a report's time range: an ISO 8601 date or date-time, or a duration back from now."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta

ACCEPTED = ("an ISO 8601 date or date-time (2026-12-01, 2026-12-01T10:00:00Z, 2026-12-01T11:00+01:00; "
            "UTC when no offset is given) or a duration back from now (90s, 30m, 2h, 7d)")
_DURATION = re.compile(r"(\d{1,9})([smhd])")
_UNIT = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_time_bound(text: str, now: datetime) -> datetime:
    """The instant `text` names, timezone-aware (ValueError: not one of ACCEPTED)."""
    text = text.strip()
    m = _DURATION.fullmatch(text)
    if m:
        try:
            return now - timedelta(**{_UNIT[m[2]]: int(m[1])})
        except OverflowError:
            raise ValueError(f"{text!r} reaches back before year 1") from None
    try:
        if len(text) == 10:  # a date alone: its midnight, UTC
            day = date.fromisoformat(text)
            return datetime(day.year, day.month, day.day, tzinfo=UTC)
        # fromisoformat takes a bare time or odd forms too: a date-time must say its date first
        if not re.match(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}", text):
            raise ValueError(text)
        at = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is not {ACCEPTED}") from None
    # request_ts is UTC: a bound without an offset is read as UTC too, not as this machine's time
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def iso(at: datetime | None) -> str | None:
    """An instant as the events write theirs: UTC, 'Z'."""
    if at is None:
        return None
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")
