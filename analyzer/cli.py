"""`oisp-analyze`: the command line of the analyzer."""

from __future__ import annotations

import sys

import click

from .segment_files import NoSegmentsError, find_segments


def _preview(data: bytes) -> str:
    return data.decode("latin-1").replace("\r", "\\r").replace("\n", "\\n")


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("paths", nargs=-1, required=True)
def main(paths):
    """Summarize the TLS connections captured in segment files, directories or globs.

    Exit codes: 0 ok, 1 runtime failure, 2 usage error.
    """
    from .capture_summary import connection_summary, first_bytes

    try:
        files = find_segments(list(paths))
    except NoSegmentsError as exc:
        raise click.UsageError(str(exc)) from None
    try:
        rows = connection_summary(files)
    except Exception as exc:  # duckdb raises its own error types for unreadable files
        click.echo(f"oisp-analyze: cannot read segments: {exc}", err=True)
        sys.exit(1)
    click.echo(f"{len(files)} segment file(s), {len(rows)} connection(s)")
    for r in rows:
        click.echo(
            f"- pid {r['pid']} {r['comm']} conn {r['conn_id']}: sent {r['egress_bytes']} B, "
            f"received {r['ingress_bytes']} B, missing {r['missing_bytes']} B"
            f"{', from start' if r['seen_from_start'] else ', start not seen'}"
            f"{', closed' if r['closed'] else ''} [{r['lib_path']}]"
        )
        for direction, arrow in (("egress", ">"), ("ingress", "<")):
            head = first_bytes(files, r["conn_id"], direction)
            if head:
                click.echo(f"    {arrow} {_preview(head)}")
