"""Object keys of shipped segments: PREFIX/node=NODE/date=YYYY-MM-DD/NAME.parquet.

The key is a function of the segment's name alone (node and UTC start time are in it, see
contract/segment_names.py), never of the clock or of the shipper's configuration besides the prefix:
a retry, or a shipper restarted on the same directory, writes the very same key, so an object is
overwritten, never duplicated. `node=`/`date=` are Hive-style partitions (DuckDB, Polars, Spark and
Athena list one node or one day without scanning the rest).
"""

from __future__ import annotations

import re

from contract import segment_format as sf

# {node}-{YYYYmmddTHHMMSS}-{run_id}-{seq:06d}: the node may hold '-', the run id (hex) never does
_NAME = re.compile(r"(?P<node>[A-Za-z0-9_][A-Za-z0-9._-]*)-(?P<date>\d{8})T\d{6}-[A-Za-z0-9]+-\d{6,}")


def object_key(prefix: str, name: str) -> str | None:
    """The key of segment NAME (without `.parquet`), or None when NAME is not spelled as the recorder
    names segments."""
    m = _NAME.fullmatch(name)
    if m is None:
        return None
    d = m["date"]
    key = f"node={m['node']}/date={d[:4]}-{d[4:6]}-{d[6:]}/{name}{sf.SEGMENT_SUFFIX}"
    return f"{prefix}/{key}" if prefix else key
