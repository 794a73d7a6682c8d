"""Where each row, connection and output record stands in the one-process order.

A one-process run hands the tracker every row of every file, files in name order, rows in file order,
and writes a connection's outputs when its connection ends: at its `close` row, or, for the ones
still open, at the end of the input in the order their first rows came. A worker sees only its
partition's rows, so each row carries its global position (the `_pos` column); the tracker copies it
to ConnectionInfo.order when a connection ends (analyzer/streams/tracker.py), and every output record
is keyed by (that order, its index among its connection's outputs). Sorting by that key gives the
one-process order back, whichever worker made the record.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from analyzer.model import END_OF_INPUT

POSITION = "_pos"  # the column the workers add to each batch
ROW_BITS = 40  # rows within a file: a position is (file index << ROW_BITS) + row
MAX_FILES = END_OF_INPUT >> ROW_BITS  # positions stay below END_OF_INPUT
CONNECTION = -1  # the index of a connection's own record (the connections table), before its exchanges


def with_positions(batch: pa.RecordBatch, file_index: int, first_row: int) -> pa.RecordBatch:
    """The batch with its rows' global positions: the file's index in the run, the row's in the file."""
    if not 0 <= file_index < MAX_FILES:
        raise ValueError(f"at most {MAX_FILES} files in one run")
    start = (file_index << ROW_BITS) + first_row
    positions = pa.array(np.arange(start, start + batch.num_rows, dtype=np.int64))
    return batch.append_column(POSITION, positions)
