"""A dict of values derived again and again (decoded header lines, redacted strings, prices, timestamp
text), kept for reuse up to a number of entries.

Past its limit, `keep` forgets them all at once: a bound, not a policy (each is derived again when next
asked for), and no bookkeeping on the hot path. Reads are the dict's own (`get`, `in`), as fast as a plain
dict's; what is worth keeping (short values, no credential) is the caller's to decide.
"""

from __future__ import annotations


class BoundedDict(dict):
    """A dict of at most `limit` entries, filled through `keep`."""

    __slots__ = ("limit",)

    def __init__(self, limit: int):
        super().__init__()
        self.limit = limit

    def keep(self, key, value):
        """Keep `value` under `key` (forgetting every other first when full); returns the value."""
        if len(self) >= self.limit:
            self.clear()
        self[key] = value
        return value
