"""`oisp-analyze report`: who pays for what. Calls, errors, tokens, cost and latency percentiles of the
AI calls in a time range, per namespace, workload and service account (or other keys), as a table or
JSON. Every number is computed by DuckDB over the ai_calls table; Python only formats."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path

import click
import duckdb

from analyzer.http.redaction import for_terminal
from analyzer.reports.report_source import ReportSourceError, open_calls
from analyzer.reports.text_table import table
from analyzer.reports.time_bounds import ACCEPTED, iso, parse_time_bound
from analyzer.segments.reader import one_line

# --by key -> its SQL over ai_calls (fixed text: nothing the user types reaches the SQL)
KEYS = {
    "namespace": "pod_namespace",
    "workload": "CASE WHEN workload_name IS NULL THEN NULL WHEN workload_kind IS NULL THEN workload_name "
                "ELSE workload_kind || '/' || workload_name END",
    "service_account": "service_account",
    "node": "node",
    "provider": "coalesce(provider_id, provider)",  # provider.name says 'other' for DeepSeek & co
    "model": "model_requested",
}
DEFAULT_BY = ("namespace", "workload", "service_account")
# name -> its SQL; the order of the output's columns
MEASURES = {
    "calls": "count(*)",
    "errors": "count(*) FILTER (success IS NOT TRUE)",  # a call with no response counts as failed
    "prompt_tokens": "sum(prompt_tokens)",
    "completion_tokens": "sum(completion_tokens)",
    "total_tokens": "sum(total_tokens)",
    "estimated_calls": "count(*) FILTER (tokens_estimated)",
    "cost_usd": "sum(cost_usd)",
    "p50_latency_ms": "quantile_cont(latency_ms, 0.5)",
    "p95_latency_ms": "quantile_cont(latency_ms, 0.95)",
}
HEADERS = {"service_account": "service account", "prompt_tokens": "prompt tok",
           "completion_tokens": "completion tok", "total_tokens": "total tok",
           "estimated_calls": "est. calls", "cost_usd": "cost $", "p50_latency_ms": "p50 ms",
           "p95_latency_ms": "p95 ms"}
COLUMNS_USED = {"request_ts", "pod_namespace", "workload_kind", "workload_name", "service_account", "node",
                "provider", "provider_id", "model_requested", "success", "prompt_tokens", "completion_tokens",
                "total_tokens", "tokens_estimated", "cost_usd", "latency_ms"}


def report(con: duckdb.DuckDBPyConnection, by: list[str], since: datetime | None,
           until: datetime | None) -> tuple[list[dict], dict]:
    """(one dict per group, keys then measures, sorted; the totals over all groups)."""
    missing = COLUMNS_USED - {r[0] for r in con.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'ai_calls'").fetchall()}
    if missing:
        raise ReportSourceError(f"its ai_calls table lacks {', '.join(sorted(missing))} (written by an older "
                                "oisp-analyze: run oisp-analyze --duckdb again)")
    where, params = [], []
    # request_ts is ISO 8601 text; compared as instants, so any offset or precision compares right
    if since is not None:
        where.append("try_cast(request_ts AS TIMESTAMPTZ) >= ?")
        params.append(since)
    if until is not None:
        where.append("try_cast(request_ts AS TIMESTAMPTZ) < ?")
        params.append(until)
    measures = ", ".join(f"{sql} AS {name}" for name, sql in MEASURES.items())
    source = "FROM ai_calls" + (" WHERE " + " AND ".join(where) if where else "")
    keys = ", ".join(f"{KEYS[k]} AS {k}" for k in by)
    # positions, not names: cost_usd and provider are ai_calls columns as well as output names
    order = [f"{len(by) + 1 + list(MEASURES).index('cost_usd')} DESC NULLS LAST", f"{len(by) + 1} DESC"]
    order += [f"{i} NULLS LAST" for i in range(1, len(by) + 1)]
    grouped = f"SELECT {keys}, {measures} {source} GROUP BY ALL ORDER BY {', '.join(order)}"
    groups = _dicts(con.execute(grouped, params))
    total = _dicts(con.execute(f"SELECT {measures} {source}", params))[0]
    return groups, total


def _dicts(result: duckdb.DuckDBPyConnection) -> list[dict]:
    names = [d[0] for d in result.description]
    return [dict(zip(names, row, strict=True)) for row in result.fetchall()]


def _cost(value: float | None) -> str | None:
    return None if value is None else f"{value:.6f}"  # a call costs fractions of a cent


def render_table(groups: list[dict], total: dict, by: list[str]) -> list[str]:
    header = [HEADERS.get(k, k) for k in [*by, *MEASURES]]

    def row(keys: list, values: dict) -> tuple:
        measures = [_cost(v) if name == "cost_usd" else v for name, v in values.items() if name in MEASURES]
        return (*keys, *measures)

    rows = [row([g[k] for k in by], g) for g in groups] + [row(["total"] + [""] * (len(by) - 1), total)]
    lines = table(header, rows, left=len(by))
    return lines[:-1] + [lines[1], lines[-1]]  # a rule above the total


class TimeBound(click.ParamType):
    name = "TIME"

    def convert(self, value, param, ctx):
        if isinstance(value, datetime):
            return value
        try:
            return parse_time_bound(value, datetime.now(UTC))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class GroupKeys(click.ParamType):
    name = "KEYS"

    def convert(self, value, param, ctx):
        if isinstance(value, list):
            return value
        keys = [k.strip() for k in value.split(",")]
        bad = [k for k in keys if k not in KEYS]
        if bad or len(set(keys)) != len(keys):
            self.fail(f"{value!r}: expected distinct keys, comma-separated, among {', '.join(KEYS)}",
                      param, ctx)
        return keys


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("source", type=click.Path(path_type=Path))
@click.option("--since", type=TimeBound(), help=f"Calls from this time on (inclusive): {ACCEPTED}.")
@click.option("--until", type=TimeBound(), help="Calls before this time (exclusive); the same forms.")
@click.option("--by", "by", type=GroupKeys(), default=",".join(DEFAULT_BY), show_default=True,
              help=f"Group by these keys, in this order: {', '.join(KEYS)}.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def report_command(source: Path, since: datetime | None, until: datetime | None, by: list[str],
                   fmt: str) -> None:
    """Calls, errors, tokens, cost and p50/p95 latency of the AI calls in SOURCE per namespace, workload
    and service account: who pays for what.

    SOURCE is a DuckDB file written by `oisp-analyze ... --duckdb FILE` or an events file written by
    `oisp-analyze ... --out FILE`. Exit codes: 0 ok (also when no call is in the range), 2 usage error
    or a source that cannot be read.
    """
    if since is not None and until is not None and since >= until:
        raise click.UsageError(f"--since ({iso(since)}) must be before --until ({iso(until)})")
    notes: list[str] = []
    try:
        with open_calls(source, notes) as con:
            groups, total = report(con, by, since, until) if con is not None else ([], {})
    except ReportSourceError as exc:
        _fail(f"{source}: {exc}")
    except duckdb.Error as exc:  # e.g. a column of an unexpected type in a database made elsewhere
        _fail(f"{source}: {one_line(str(exc))}")
    for note in notes:
        click.echo(f"oisp-analyze report: {note}", err=True)
    if fmt == "json":
        out = {"source": str(source), "since": iso(since), "until": iso(until), "group_by": by,
               "groups": groups, "total": total if groups else None}
        click.echo(json.dumps(out, indent=2))
        return
    span = "".join(f" {word} {iso(at)}" for word, at in (("since", since), ("until", until)) if at)
    if not groups:
        click.echo(f"no AI calls in {for_terminal(str(source))}{span}")
        return
    click.echo(f"{total['calls']} AI call(s) in {for_terminal(str(source))}{span}, by {', '.join(by)}")
    for line in render_table(groups, total, by):
        click.echo(for_terminal(line))  # names come from captured processes' pods


def _fail(message: str) -> None:
    click.echo(f"oisp-analyze report: {for_terminal(message)}", err=True)
    sys.exit(2)
