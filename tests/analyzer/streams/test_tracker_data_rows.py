"""Data rows of an open connection, and open and close rows, are taken from the columns as they are (feed,
_data_row) and in-order pieces skip the reorder heap (StreamAssembler.push): both are shortcuts only. On
seeded hostile connections (shuffled rows, overlaps, gaps, duplicates, nulls, plaintext pairs, several
connections in a batch), the tracker hands out the same exchanges, connections and counts as with the
shortcuts turned off."""

from __future__ import annotations

import dataclasses
import random

import pyarrow as pa

from analyzer.streams import reassembly, tracker
from analyzer.streams.tracker import ConnectionTracker
from helpers.hostile_inputs import SCHEMA, connection_rows

# with the TLS stack column (format 3 on), open rows have every column a connection is made from
WITH_STACK = SCHEMA.append(pa.field("tls_stack", pa.string()))


def run(batches) -> list:
    closed = []
    t = ConnectionTracker(on_close=lambda info: closed.append(dataclasses.asdict(info)))
    xs = [dataclasses.asdict(x) for x in t.process(batches)]
    return [xs, closed, t.rows_dropped, t.parse_errors, t.connections_seen]


def test_the_shortcuts_hand_out_what_the_rows_do(monkeypatch):
    rng = random.Random(3)
    cases = []
    for _ in range(150):
        rows = [r for _ in range(rng.randint(1, 3)) for r in connection_rows(rng)]
        for r in rows:  # what connection_rows does not make: empty writes, repeated and far offsets
            if r.get("kind") == "data" and rng.random() < 0.05:
                r.update(rng.choice([{"data": b"", "length": 0}, {"stream_offset": 0},
                                     {"stream_offset": r["stream_offset"] + 10_000}]))
        cut = rng.randint(0, len(rows))  # two batches: connections open in one, go on in the next
        schema = rng.choice([SCHEMA, WITH_STACK])
        cases.append([pa.RecordBatch.from_pylist(part, schema=schema) for part in (rows[:cut], rows[cut:])])
    fast = [run(c) for c in cases]
    assert sum(len(r[0]) for r in fast) > 100  # exchanges were made
    monkeypatch.setattr(tracker, "_DATA_ROW", (*tracker._DATA_ROW, "no such column"))
    def push(self, piece):  # every piece through the heap, as before the shortcut
        self._push(piece)
        return self._drain(final=self.pending_bytes > self.max_pending)

    monkeypatch.setattr(reassembly.StreamAssembler, "push", push)
    for c, expected in zip(cases, fast, strict=True):
        assert run(c) == expected


def test_a_batch_is_taken_in_slices_with_the_same_exchanges(monkeypatch):
    """Rows become Python values SLICE_ROWS at a time, and process() hands out the exchanges of each slice
    before taking the next: connections cut across slices (and batches) come out as with one slice."""
    rng = random.Random(5)
    rows = [r for _ in range(60) for r in connection_rows(rng)]
    cut = len(rows) // 2
    batches = [pa.RecordBatch.from_pylist(part, schema=WITH_STACK) for part in (rows[:cut], rows[cut:])]
    whole = run(batches)
    assert len(whole[0]) > 20
    for size in (1, 3, 7):
        monkeypatch.setattr(tracker, "SLICE_ROWS", size)
        assert run(batches) == whole
        t = ConnectionTracker()  # feed() (live mode) slices too, and returns the whole batch's exchanges
        fed = [x for b in batches for x in t.feed(b)] + t.finish()
        assert [dataclasses.asdict(x) for x in fed] == whole[0]
    # the first exchange comes before the batch's last rows were taken
    monkeypatch.setattr(tracker, "SLICE_ROWS", 8)
    t = ConnectionTracker()
    one = pa.RecordBatch.from_pylist(rows, schema=WITH_STACK)
    next(t.process([one]))
    assert t.connections_seen < whole[4]
