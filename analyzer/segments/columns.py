"""Arrow columns as Python lists, fast for the column types segments use most.

pyarrow's Array.to_pylist builds each value through a generic path (about 0.4 us a value); rows of a
segment are handed to the tracker as Python values, so that path was the largest single cost of a
run. Integers go through numpy's tolist (C, exact Python ints, uint64 included) and dictionary-encoded
strings convert their dictionary once and look the values up by index; everything else (binary data,
timestamps, lists) is left to to_pylist. The values are the same as to_pylist's, nulls included.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa


def to_pylist(array: pa.Array) -> list:
    """array.to_pylist(), faster for integers and dictionary-encoded columns."""
    kind = array.type
    if pa.types.is_integer(kind):
        return _integers(array)
    if pa.types.is_dictionary(kind) and pa.types.is_integer(kind.index_type):
        values = array.dictionary.to_pylist()
        if array.null_count:
            values.append(None)  # nulls take the index one past the dictionary
            indices = array.indices.fill_null(len(values) - 1)
        else:
            indices = array.indices
        return list(map(values.__getitem__, indices.to_numpy().tolist()))
    return array.to_pylist()


def _integers(array: pa.Array) -> list:
    if not array.null_count:
        return array.to_numpy().tolist()
    out = array.fill_null(0).to_numpy().tolist()
    for i in np.flatnonzero(array.is_null().to_numpy(zero_copy_only=False)).tolist():
        out[i] = None
    return out
