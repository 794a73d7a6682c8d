"""The input of the audit notebooks (notebooks/): a DuckDB file written by `oisp-analyze --duckdb`, or
segments (a directory, files or a glob), which are analyzed first into a temporary DuckDB file.

    audit = open_audit("samples/audit/segments")   # or "out/demo/audit.duckdb"
    audit.sql("SELECT provider_id, count(*) FROM ai_calls GROUP BY ALL").pl()

The DuckDB file is attached read-only to an in-memory connection, so the notebooks can define
temporary views and macros without ever writing to the user's file. Two macros are defined:
`workload(pod_name)` (the pod's name without the suffixes controllers add: a guess, for recordings made
before the recorder named workloads) and `caller(namespace, workload_name, pod_name, process_name)` (a
label for charts: the recorded workload, else that guess).
"""

from __future__ import annotations

import atexit
import glob
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import duckdb

from analyzer.reports.report_source import is_duckdb
from analyzer.segments.files import find_segments

# Pod names of Deployments (<name>-<replicaset hash>-<5>), CronJobs (<name>-<schedule time>-<5>),
# DaemonSets and Jobs (<name>-<5>) and StatefulSets (<name>-<ordinal>). A heuristic: a pod whose own
# name ends in five such characters loses them too.
MACROS = r"""
CREATE OR REPLACE TEMP MACRO workload(pod) AS CASE
    WHEN pod IS NULL THEN NULL
    WHEN regexp_matches(pod, '^.+-[0-9]+$') THEN regexp_extract(pod, '^(.+)-[0-9]+$', 1)
    WHEN regexp_matches(pod, '^.+-[a-z0-9]{5}$')
        THEN regexp_extract(pod, '^(.+?)(-[a-z0-9]{6,10})?-[a-z0-9]{5}$', 1)
    ELSE pod END;
CREATE OR REPLACE TEMP MACRO caller(namespace, workload_name, pod, process) AS
    CASE WHEN pod IS NULL THEN '(host) ' || coalesce(process, '?')
         ELSE coalesce(namespace, '?') || '/' || coalesce(workload_name, workload(pod)) END;
"""


class AuditInputError(ValueError):
    """The input path is neither a DuckDB file nor segments."""


@dataclass
class Audit:
    con: duckdb.DuckDBPyConnection
    database: Path  # the DuckDB file the tables come from
    segments: list[str] | None  # segment files, when the input was segments (or given as well)
    content: str | None  # the content mode the analyzer ran with, when it ran here

    def sql(self, query: str, params: dict | None = None) -> duckdb.DuckDBPyRelation:
        return self.con.sql(query, params=params) if params else self.con.sql(query)

    def tables(self) -> set[str]:
        return {r[0] for r in self.con.sql("SELECT table_name FROM duckdb_tables() WHERE database_name = "
                                           "'audit'").fetchall()}


def _is_duckdb(path: Path) -> bool:
    if not path.is_file():
        return False
    with path.open("rb") as f:
        return is_duckdb(f.read(12))


def analyze(segments: list[str], database: Path, content: str = "full") -> None:
    """Run the analyzer (`oisp-analyze SEGMENTS --duckdb DATABASE --content CONTENT`) in this
    environment's Python, whichever directory the notebook runs in."""
    args = [sys.executable, "-c", "from analyzer.cli import main; main()", *segments,
            "--duckdb", str(database), "--content", content]
    done = subprocess.run(args, capture_output=True, text=True)
    if done.returncode != 0:
        raise AuditInputError(f"oisp-analyze failed (exit {done.returncode}):\n{done.stderr.strip()}")


def open_audit(path: str | Path, content: str = "full", segments: str | Path | None = None,
               workdir: Path | None = None) -> Audit:
    """Open the notebooks' input. `path`: a DuckDB file, or segments to analyze (with `content`:
    full keeps prompts, which the prompt audit needs). `segments`: where the segments are, for
    capture-health sections that read them, when `path` is a DuckDB file."""
    p = Path(path)
    if _is_duckdb(p):
        database, analyzed_content = p, None
        files = find_segments([str(segments)]) if segments is not None else None
    else:
        if not p.exists() and not glob.has_magic(str(path)):
            raise AuditInputError(f"no such file or directory: {path}")
        if p.is_file() and p.suffix != ".parquet":
            raise AuditInputError(f"{path} is neither a DuckDB file nor a segment (*.parquet)")
        files = find_segments([str(path)])
        tmp = Path(tempfile.mkdtemp(prefix="oisp-audit-", dir=workdir))
        atexit.register(shutil.rmtree, tmp, ignore_errors=True)  # it holds prompts: gone with the kernel
        database = tmp / "audit.duckdb"
        analyze([str(f) for f in files], database, content)
        analyzed_content = content
    con = duckdb.connect()
    con.execute("ATTACH '" + database.as_posix().replace("'", "''") + "' AS audit (READ_ONLY)")
    con.execute("USE audit")
    con.execute(MACROS)
    return Audit(con, database, [str(f) for f in files] if files else None, analyzed_content)


def time_bucket_seconds(span_seconds: float, max_buckets: int = 40) -> int:
    """A round bucket width giving at most `max_buckets` buckets over the span (charts over time)."""
    for width in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 43200, 86400):
        if span_seconds / width <= max_buckets:
            return width
    return 86400 * max(1, int(span_seconds / 86400 / max_buckets) + 1)


def has_rows(frame, what: str) -> bool:
    """Whether there is something to chart; says so when there is not (the chart is then skipped,
    which tests/analyzer/reports/test_notebooks.py counts as a failure on the sample data)."""
    if len(frame) == 0:
        print(f"nothing to chart: no {what} in this input")
        return False
    return True


def stacked_bars(ax, frame, index: str, on: str, values: str, *, horizontal: bool = False,
                 width: float = 0.8, share: bool = False, order: list[str] | None = None,
                 colors: dict[str, str] | None = None) -> None:
    """Bars of `values` for each `index`, stacked by `on`, from a long frame (as GROUP BY gives it)
    on a matplotlib Axes. `share`: each bar as percentages of its total. `order` and `colors` fix the
    stacking order and colours of `on`'s values, so that charts side by side agree. Time on `index`
    wants `width` in days (matplotlib's unit for dates)."""
    import polars as pl

    wide = (frame.pivot(on=on, index=index, values=values, aggregate_function="sum")
            .fill_null(0).sort(index))
    keys = wide[index].to_list()
    parts = [c for c in wide.columns if c != index]
    if order is not None:
        parts = [c for c in order if c in parts] + [c for c in parts if c not in order]
    totals = wide.select(pl.sum_horizontal(parts)).to_series().to_list()
    base = [0.0] * len(keys)
    for part in parts:
        vals = [float(v) for v in wide[part].to_list()]
        if share:
            vals = [100 * v / t if t else 0.0 for v, t in zip(vals, totals, strict=True)]
        style = {"label": str(part), "color": (colors or {}).get(part)}
        if horizontal:
            ax.barh(keys, vals, left=base, height=width, **style)
        else:
            ax.bar(keys, vals, bottom=base, width=width, align="edge", **style)
        base = [b + v for b, v in zip(base, vals, strict=True)]
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
