"""How long to wait after consecutive failures: exponential, capped, with jitter.

The wait doubles from `initial` with each failure in a row, up to `maximum`, and is then drawn
between half of it and all of it ("equal jitter"), so that the shippers of every node, failing
together when the store goes down, do not come back together. Nothing is ever given up: the store
is tried again at most every `maximum` seconds for as long as it is down, and what bounds the backlog
meanwhile is the recorder's quota (segments_max_total_bytes), whose deletions are counted.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    initial: float
    maximum: float
    failures: int = 0  # in a row
    rng: random.Random = field(default_factory=random.Random)

    def failed(self) -> float:
        """Count a failure; the seconds to wait before the next attempt."""
        self.failures += 1
        ceiling = min(self.maximum, self.initial * 2 ** min(self.failures - 1, 62))
        return self.rng.uniform(ceiling / 2, ceiling)

    def succeeded(self) -> None:
        self.failures = 0
