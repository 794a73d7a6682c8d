"""`oisp-analyze fleet SOURCE_URL --out OUT_URL`: the command line of fleet mode (analyzer/fleet/run.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import click


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("source_url")
@click.option("--out", "out_url", required=True, metavar="OUT_URL",
              help="Where the outputs go: a directory or a URL (s3://bucket/prefix); the manifest "
                   "_SUCCESS.json is written there last.")
@click.option("--scheduler", metavar="ADDRESS", envvar="DASK_SCHEDULER_ADDRESS",
              help="A Dask scheduler (tcp://host:8786; default: DASK_SCHEDULER_ADDRESS, which the Dask "
                   "operator sets in a DaskJob's pod). Without it, a local cluster of --workers processes.")
@click.option("--workers", type=click.IntRange(min=1),
              help="Worker processes of the local cluster (default: the cores available).")
@click.option("--partitions-per-node", "parts", type=click.IntRange(min=1),
              help="Partitions each node's files are analyzed in, one task each (default: enough for every "
                   "worker to have one).")
@click.option("--endpoint-url", metavar="URL",
              help="An S3-compatible store's endpoint, for s3:// URLs (default: AWS_ENDPOINT_URL, else AWS).")
@click.option("--content", type=click.Choice(["full", "hash", "none"]),
              help="Prompts and answers in events: as captured (default), as keyed hashes, or left out.")
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path),
              help="YAML config file; its 'analyzer' section sets content, hash_key_file, endpoints, limits.")
@click.option("--overwrite", is_flag=True, help="Replace the output of an earlier run at OUT_URL.")
@click.option("--connect-timeout", type=click.FloatRange(min=0.1), default=30.0, show_default=True,
              help="Seconds to wait for --scheduler to answer.")
def fleet_command(source_url, out_url, scheduler, workers, parts, endpoint_url, content, config_file,
                  overwrite, connect_timeout):
    """Analyze the segments of many nodes at SOURCE_URL (a directory, s3://bucket/prefix, or a glob) on a
    Dask cluster; write events (JSON lines and Parquet, by date and node) and the DuckDB tables (Parquet)
    under OUT_URL. The same events, with the same ids, as one `oisp-analyze` process on the same files.

    Exit codes: 0 done (the manifest is written), 1 the run failed (no manifest), 2 usage error.
    """
    from analyzer.config import AnalyzerConfigError, load, resolve_hash_key
    from analyzer.fleet.run import FleetError, FleetOptions, FleetUsageError, run_fleet
    from analyzer.fleet.storage import location
    from analyzer.segments.files import NoSegmentsError

    if workers is not None and scheduler:
        raise click.UsageError("--workers sizes the local cluster: not with --scheduler "
                               "(or DASK_SCHEDULER_ADDRESS)")
    try:
        source = location(source_url, endpoint_url)
    except ValueError:
        raise click.BadParameter("is empty", param_hint="'SOURCE_URL'") from None
    try:
        out = location(out_url, endpoint_url)
    except ValueError:
        raise click.BadParameter("is empty", param_hint="'--out'") from None
    try:
        cfg = load(config_file)
        if content:
            cfg.content = content
        resolve_hash_key(cfg, [])  # hash_key_file, else this user's key: the same for every worker
    except AnalyzerConfigError as exc:
        raise click.UsageError(str(exc)) from None
    opts = FleetOptions(source, out, scheduler, workers, parts, overwrite, connect_timeout)
    try:
        m = run_fleet(opts, cfg)
    except (NoSegmentsError, FleetUsageError) as exc:
        raise click.UsageError(str(exc)) from None
    except (FleetError, OSError) as exc:
        click.echo(f"oisp-analyze fleet: {' '.join(str(exc).split())}", err=True)
        sys.exit(1)
    for p in m["problems"]:
        click.echo(f"oisp-analyze fleet: skipped {p['file']}: {p['problem']}", err=True)
    click.echo(
        f"oisp-analyze fleet: {m['files_read']} of {m['segment_files']} segment file(s), {m['rows']} rows, "
        f"{m['connections']} connection(s), {m['exchanges']} exchange(s) ({m['incomplete']} incomplete), "
        f"{m['events']} AI event(s)" + (f", {m['parse_errors']} parse error(s)" if m["parse_errors"] else "")
        + f", {len(m['nodes'])} node(s), {len(m['files'])} file(s) written to {out_url}", err=True)
    sys.exit(1 if m["problems"] and m["files_read"] == 0 else 0)
