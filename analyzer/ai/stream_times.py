"""When an item of a streamed response came: the capture time of the body piece that completed it.

A streamed body is the concatenation of pieces, each captured at its own time (HttpMessage.arrivals:
the body's size once a piece was added, and when). Item N of the stream (an SSE event, an NDJSON line,
an AWS event-stream message, counted as exchange_events._json counts them) was complete once the
body's first K bytes were, for the least K that holds N + 1 items: the time of the piece that brought
byte K. The count is taken on prefixes that grow geometrically, then halved down to the piece: the
first content usually comes in the first items, so this reads a small part of the body.
"""

from __future__ import annotations

from collections.abc import Callable

from analyzer.http.aws_eventstream import EventStreamError, decode
from analyzer.http.bodies import SseParser, decode_body, split_ndjson
from analyzer.http.body_kind import BodyKind, body_kind, content_encoding
from analyzer.model import HttpMessage, Limits


def item_time(msg: HttpMessage, limits: Limits, index: int) -> int | None:
    """The capture time (ns) of the piece that completed stream item `index` of msg's body; None when
    the body is not a stream of items (a JSON body, a JSON array) or its pieces' times are unknown."""
    arrivals = msg.arrivals
    if not arrivals or index < 0:
        return None
    count = _counter(msg, limits)
    if count is None:
        return None
    last = len(arrivals) - 1

    def holds(j: int) -> bool:  # do the pieces up to j hold the item? The whole body does by definition
        return j >= last or count(arrivals[j][0]) > index

    # the first j that holds: probe 0, 1, 3, 7, ... then bisect the last step
    lo, hi = 0, 0
    while not holds(hi):
        lo, hi = hi + 1, min(last, 2 * hi + 1)
    while lo < hi:
        mid = (lo + hi) // 2
        if holds(mid):
            hi = mid
        else:
            lo = mid + 1
    return arrivals[lo][1]


def _counter(msg: HttpMessage, limits: Limits) -> Callable[[int], int] | None:
    """How many stream items the body's first n bytes hold, for the body's kind; None: not a stream."""
    encoding = content_encoding(msg)
    # the body is looked at only when the headers are unreliable (an SSE body sniffed by its start)
    kind = body_kind(msg, None if msg.headers_reliable
                     else decode_body(msg.body, encoding, limits.max_decoded_body_bytes).data)

    def decoded(n: int) -> bytes:
        d = decode_body(msg.body[:n], encoding, limits.max_decoded_body_bytes, truncated=True)
        return b"" if d.error and encoding else d.data

    if kind is BodyKind.SSE:
        def sse(n: int) -> int:
            return len(SseParser(max_line=limits.max_event_line_bytes).feed(decoded(n)))
        return sse
    if kind is BodyKind.NDJSON:
        def ndjson(n: int) -> int:
            data = decoded(n)
            return len(split_ndjson(data[:data.rfind(b"\n") + 1], limits.max_event_line_bytes)[0])
        return ndjson
    if kind is BodyKind.AWS_EVENTSTREAM:
        def messages(n: int) -> int:
            try:
                return len(decode(decoded(n))[0])
            except EventStreamError:
                return 0
        return messages
    return None

