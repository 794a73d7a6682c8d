"""The analyzer's central record: one HTTP request with its response, as the protocol parsers
rebuild them, and the connection it travelled on."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import Enum

from contract.identity import ProcessIdentity  # shared with the recorder, which writes the rows

# ConnectionInfo.order of the connections the end of the input closes: after every row position
END_OF_INPUT = 1 << 62


@dataclass
class ConnectionInfo:
    node: str
    conn_id: str
    pid: int
    tid: int
    comm: str
    uid: int
    cgroup_id: int
    lib_path: str
    seen_from_start: bool = False  # an `open` row: the first byte of the connection was captured
    closed: bool = False
    first_ts_ns: int = 0
    last_ts_ns: int = 0
    protocol: str = "unknown"  # http/1.1, h2, unknown
    role: str = "client"  # the process's end of the connection: client or server
    egress_bytes: int = 0
    ingress_bytes: int = 0
    missing_bytes: int = 0
    # identity (format version 2): the server name the client asked for, the socket, the process
    server_name: str | None = None
    fd: int | None = None
    peer_ip: str | None = None
    peer_port: int | None = None
    local_ip: str | None = None
    local_port: int | None = None
    socket_source: str | None = None  # set_fd (exact), thread_connect (inferred) or go_conn
    tls_stack: str | None = None  # openssl or go (format version 3; None before), plaintext (4)
    process: ProcessIdentity | None = None
    # plaintext (format 4): the other end of the same TCP connection, when it was captured too (both
    # processes on the node): matched by addresses and ports (the client reports the calls)
    counterpart: ConnectionInfo | None = field(default=None, repr=False, compare=False)
    # hostile or broken input: the budgets (Limits field names) it went over, and the type of the
    # exception a protocol parser raised on it (its exchanges so far were still handed out)
    limits_hit: list[str] = field(default_factory=list)
    parse_error: str | None = None
    # parallel runs (analyzer/parallel/order.py): where the connection ended in the one-process order,
    # which the workers' outputs are merged by: its close row's position (the batches' `_pos` column),
    # or END_OF_INPUT plus its first row's when the input ended it. None without a `_pos` column.
    order: int | None = field(default=None, repr=False, compare=False)

    def hit(self, limit: str) -> None:
        """Record that a budget was exceeded on this connection (once per budget)."""
        if limit not in self.limits_hit:
            self.limits_hit.append(limit)


@dataclass(frozen=True)
class Limits:
    """What one connection may cost the protocol layer, whatever its bytes say (the `analyzer:` keys
    of the same names in analyzer/config.py). Over a budget, input is dropped or left unparsed and the
    connection says so (ConnectionInfo.limits_hit); nothing is allocated in proportion to a number
    the peer sent. The max_json_*, max_event_line_bytes and max_decoded_body_bytes budgets bound the
    AI layer and --exchanges instead (EventOptions.limits, ExchangesFile): the events' and records'
    own flags say when they bound."""

    max_body_bytes: int = 64 * 1024 * 1024  # body bytes kept per message (request or response)
    max_undetected_bytes: int = 4 * 1024 * 1024  # bytes held per connection before its protocol is known
    max_reorder_bytes: int = 16 * 1024 * 1024  # bytes held per stream beyond a hole, waiting for it
    max_header_list_bytes: int = 1024 * 1024  # decoded bytes of one HTTP/2 header block (HPACK sizes)
    max_connection_header_bytes: int = 16 * 1024 * 1024  # decoded HTTP/2 header bytes per connection
    max_hpack_table_bytes: int = 64 * 1024  # HPACK dynamic table size accepted from SETTINGS/updates
    max_open_streams: int = 1000  # HTTP/2 streams tracked at once per connection
    max_gap_records: int = 16  # StreamGap records (and gap notes) kept per exchange; more are counted
    # body bytes held across a connection's unfinished exchanges (HTTP/2 open streams, HTTP/1 in flight)
    max_connection_body_bytes: int = 256 * 1024 * 1024
    # HTTP/1: captured writes waiting behind the exchange in front (pipelined requests while the
    # server is silent, responses to a lost request); over it, that exchange is handed out as it stands
    max_pipelined_requests: int = 1000
    # the AI layer (analyzer/ai): JSON parsed for events, stream lines, decoded bodies
    max_json_bytes: int = 32 * 1024 * 1024  # JSON text parsed at once (a body, a stream event)
    max_json_depth: int = 128  # nesting of that JSON (json.loads recurses)
    max_event_line_bytes: int = 8 * 1024 * 1024  # one SSE or NDJSON line; longer ones are cut
    max_decoded_body_bytes: int = 64 * 1024 * 1024  # a body after Content-Encoding is undone

    @staticmethod
    def of(limits: Limits | None, max_body: int | None = None) -> Limits:
        """The given limits (default ones for None), with the body cap of an older `max_body` argument."""
        limits = limits or Limits()
        return limits if max_body is None else replace(limits, max_body_bytes=max_body)


class SyncState(Enum):
    """Where a parser stands in one direction of a connection: whether it knows where messages
    (HTTP/1) or frames (HTTP/2) begin."""

    IN_SYNC = "in sync"
    JOINED_MID_STREAM = "joined mid-stream"  # the capture began mid-connection: seeking a start
    AFTER_GAP = "after gap"  # bytes were lost: seeking the next start
    DEAD = "dead"  # parsing stopped for good (protocol switch, parse error, oversized frame)

    @property
    def seeking(self) -> bool:
        return self in (SyncState.JOINED_MID_STREAM, SyncState.AFTER_GAP)


@dataclass(frozen=True)
class StreamGap:
    """Bytes the capture lost in one direction of a connection, as one exchange was touched by them:
    while it was in flight, or (resumed) as the gap after which parsing resumed at this exchange."""

    direction: str  # request | response
    length: int
    reason: str  # the recorder's gap reason, or "missing" for a hole nobody reported
    resumed: bool = False

    @property
    def note(self) -> str:
        """The wording for people (Exchange.notes, the events' limitations)."""
        what = f"{self.length} bytes missing in the {self.direction} stream ({self.reason})"
        return f"parsing resumed after {what}" if self.resumed else what


@dataclass
class HttpMessage:
    headers: list[tuple[str, str]] = field(default_factory=list)  # names lower-cased, in order
    # the body as framed on the wire, de-chunked, still content-encoded (a bytearray: appended to
    # frame by frame, where bytes would be copied whole each time)
    body: bytearray = field(default_factory=bytearray)
    trailers: list[tuple[str, str]] = field(default_factory=list)
    start_ns: int | None = None  # first byte
    end_ns: int | None = None  # last byte
    complete: bool = False  # the whole message was seen (end of message reached, no gap inside)
    capped: bool = False  # the body went over the size cap: what is kept is its beginning
    # bytes lost in its direction while it was being read: inside its body (HTTP/1, bridged), or
    # somewhere in the frames of all streams (HTTP/2)
    missing_bytes: int = 0
    headers_reliable: bool = True  # False when HPACK state was unknown (capture began mid-connection)
    # when the body came: (body size once a piece was added, that piece's capture time), one entry per
    # capture time; the time of a stream's events (analyzer/ai/stream_times.py)
    arrivals: list[tuple[int, int]] = field(default_factory=list)

    def add_body(self, data: bytes, ts_ns: int) -> None:
        """Append body bytes captured at ts_ns."""
        if not data:
            return
        self.body += data
        if self.arrivals and self.arrivals[-1][1] == ts_ns:
            self.arrivals[-1] = (len(self.body), ts_ns)
        else:
            self.arrivals.append((len(self.body), ts_ns))

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k == name:
                return v
        return None


@dataclass
class Exchange:
    connection: ConnectionInfo
    http_version: str  # "1.1", "1.0", "2"
    sequence: int  # order of the request on its connection (HTTP/1) or of its stream (HTTP/2)
    stream_id: int | None = None
    method: str | None = None
    authority: str | None = None
    path: str | None = None
    status: int | None = None
    informational: list[int] = field(default_factory=list)  # 1xx status codes seen before the final
    request: HttpMessage = field(default_factory=HttpMessage)
    response: HttpMessage = field(default_factory=HttpMessage)
    notes: list[str] = field(default_factory=list)  # what went wrong or was unusual, for people only
    gaps: list[StreamGap] = field(default_factory=list)  # lost bytes that touched it, in order
    gaps_omitted: int = 0  # gaps beyond Limits.max_gap_records: counted, not recorded
    # the type of the exception building its events raised (analyzer/ai/exchange_events.py): set by the
    # pipeline; a parser failure of the whole connection is ConnectionInfo.parse_error
    parse_error: str | None = None

    def add_gap(self, gap: StreamGap, limit: int) -> bool:
        """Record a gap (and its note) unless `limit` are recorded already; False: only counted."""
        if len(self.gaps) >= limit:
            self.omit_gaps(1, limit)
            return False
        self.gaps.append(gap)
        self.notes.append(gap.note)
        return True

    def omit_gaps(self, count: int, limit: int) -> None:
        """Count gaps beyond `limit` (noted once)."""
        if count and not self.gaps_omitted:
            self.notes.append(f"more gaps than {limit}: counted, not listed")
        self.gaps_omitted += count

    @property
    def complete(self) -> bool:
        return self.request.complete and self.response.complete
