"""Tables of the segment schema for tests that need rows of a given shape, not real captures."""

from __future__ import annotations

import pyarrow as pa

from contract import segment_format as sf


def segment_table(rows: int, given: dict[str, list]) -> pa.Table:
    """`rows` rows of sf.SCHEMA: the `given` columns as they are, nulls in the other nullable ones,
    empty strings (dictionary columns) or zeros in the rest."""
    columns = []
    for f in sf.SCHEMA:
        if f.name in given:
            columns.append(pa.array(given[f.name], type=f.type))
        elif f.nullable:
            columns.append(pa.nulls(rows, f.type))
        else:
            columns.append(pa.array([""] * rows if pa.types.is_dictionary(f.type) else [0] * rows, f.type))
    return pa.Table.from_arrays(columns, schema=sf.SCHEMA)
