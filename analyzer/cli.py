"""`oisp-analyze`: the command line of the analyzer."""

from __future__ import annotations

import os
import stat
import sys
from contextlib import contextmanager
from pathlib import Path

import click

from analyzer.http.redaction import for_terminal
from analyzer.segments.files import NoSegmentsError, find_segments


def _preview(data: bytes) -> str:
    """The first bytes of a stream, fit for a terminal: secrets redacted, control characters escaped
    (\\r, \\n, \\xNN), so that captured bytes can neither leak a key nor drive the terminal."""
    return for_terminal(data.decode("latin-1"))


def _hash_key(cfg, outputs: list[Path | None], follow: bool) -> None:
    """The hash key (hash_key_file, else the installation's, made once): or a one-line error, exit 1."""
    from analyzer.config import AnalyzerConfigError, resolve_hash_key

    try:
        resolve_hash_key(cfg, outputs, make_dir=follow)
    except AnalyzerConfigError as exc:
        click.echo(f"oisp-analyze: {exc}", err=True)
        sys.exit(1)


def main() -> None:
    """`oisp-analyze check ...` checks an events file, `oisp-analyze fleet ...` analyzes on a Dask cluster
    (analyzer/fleet/command.py), `oisp-analyze report ...` reports usage per workload
    (analyzer/reports/workload_report.py); anything else analyzes segments."""
    if len(sys.argv) > 1 and sys.argv[1] == "check":
        check_command(sys.argv[2:], prog_name="oisp-analyze check")
    elif len(sys.argv) > 1 and sys.argv[1] == "report":
        from analyzer.reports.workload_report import report_command

        report_command(sys.argv[2:], prog_name="oisp-analyze report")
    elif len(sys.argv) > 1 and sys.argv[1] == "fleet":
        from analyzer.fleet.command import fleet_command

        fleet_command(sys.argv[2:], prog_name="oisp-analyze fleet")
    else:
        analyze_command()


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("events_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("expected_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def check_command(events_file: Path, expected_file: Path) -> None:
    """Check EVENTS_FILE (JSON lines) against EXPECTED_FILE (the OISP cookbook's expectations).

    Exit codes: 0 all met, 1 some expectation not met, 2 usage error or malformed input.
    """
    import json

    from analyzer.reports.expectations import ExpectationsError, check

    try:
        expected = json.loads(expected_file.read_text())
    except ValueError as exc:
        raise click.UsageError(f"{expected_file} is not valid JSON: {exc}") from None
    events = []
    for n, line in enumerate(events_file.read_text().splitlines(), 1):
        if line.strip():
            try:
                events.append(json.loads(line))
            except ValueError:
                raise click.UsageError(f"{events_file} line {n} is not JSON") from None
    try:
        failures = check(events, expected)
    except ExpectationsError as exc:
        raise click.UsageError(f"{expected_file}: {exc}") from None
    for f in failures:
        click.echo(f"FAIL {f}", err=True)
    n = len(expected.get("events", [])) + ("minimum_events" in expected)
    click.echo(f"{n - len(failures)} of {n} expectation(s) met on {len(events)} event(s)")
    sys.exit(1 if failures else 0)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("paths", nargs=-1, required=True)
@click.option("--exchanges", "exchanges_out", type=click.Path(dir_okay=False, path_type=Path),
              help="Write every HTTP exchange as one JSON object per line ('-' for stdout).")
@click.option("--out", "events_out", type=click.Path(dir_okay=False, path_type=Path),
              help="Write OISP ai.request/ai.response events as JSON lines ('-' for stdout).")
@click.option("--duckdb", "duckdb_out", type=click.Path(dir_okay=False, path_type=Path),
              help="Write tables (events, ai_calls, exchanges, connections) to this DuckDB file.")
@click.option("--content", type=click.Choice(["full", "hash", "none"]),
              help="Prompts and answers in events: as captured (default), as keyed hashes, or left out.")
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path),
              help="YAML config file; its 'analyzer' section sets content, hash_key_file and endpoints.")
@click.option("--follow", is_flag=True,
              help="Live mode: read the segments of one directory as they are published, until SIGTERM "
                   "(needs --out FILE; a checkpoint next to it makes restarts write no event twice).")
@click.option("--metrics-port", type=click.IntRange(0, 65535),
              help="With --follow: serve Prometheus metrics on this port (/metrics; 0: any free port).")
@click.option("--otlp", "otlp_endpoint", metavar="ENDPOINT",
              help="Also export each AI call to an OpenTelemetry collector: host:port (TLS) or an http:// or "
                   "https:// URL; overrides export.otlp.endpoint of --config (docs/export.md).")
@click.option("--otlp-protocol", type=click.Choice(["grpc", "http/protobuf"]),
              help="OTLP protocol (default: export.otlp.protocol, else grpc).")
@click.option("--workers", type=click.IntRange(min=1),
              help="Processes to analyze with (default: the cores available, but one for a small input); "
                   "the output is the same, byte for byte, whatever the number. Not with --follow.")
def analyze_command(paths, exchanges_out, events_out, duckdb_out, content, config_file, follow, metrics_port,
                    otlp_endpoint, otlp_protocol, workers):
    """Analyze segment files, directories (searched recursively) or globs.

    Without an output option, summarizes the TLS connections the segments hold. To check an events
    file against expectations: oisp-analyze check EVENTS EXPECTED; usage per workload: oisp-analyze
    report FILE. Exit codes: 0 ok, 1 runtime failure, 2 usage error.
    """
    from analyzer.config import AnalyzerConfigError, load

    try:
        cfg = load(config_file)
        if follow:
            _check_follow(paths, events_out, exchanges_out, duckdb_out)
            if workers is not None and workers > 1:
                raise click.UsageError("--follow runs in one process: not --workers")
            files = []
        elif metrics_port is not None:
            raise click.UsageError("--metrics-port needs --follow")
        else:
            files = find_segments(list(paths))
            _check_outputs(files, {"--exchanges": exchanges_out, "--out": events_out, "--duckdb": duckdb_out})
    except (NoSegmentsError, AnalyzerConfigError) as exc:
        raise click.UsageError(str(exc)) from None
    if content:
        cfg.content = content
    try:
        _otlp_options(cfg, otlp_endpoint, otlp_protocol)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    outputs = [events_out, exchanges_out, duckdb_out]
    # a key for what hashes: events (API keys, and content with --content hash), exchanges' hashed bodies
    if follow or cfg.otlp is not None or events_out is not None or duckdb_out is not None \
            or exchanges_out is not None and cfg.content == "hash":
        _hash_key(cfg, outputs, follow)
    if follow:
        if metrics_port is not None:
            cfg.metrics_port = metrics_port
        sys.exit(_follow(Path(paths[0]), events_out, cfg))
    if exchanges_out is not None or events_out is not None or duckdb_out is not None or cfg.otlp is not None:
        sys.exit(_analyze(files, exchanges_out, events_out, duckdb_out, cfg, workers))
    from analyzer.reports.capture_summary import connection_summary, first_bytes

    try:
        rows = connection_summary(files)
    except Exception as exc:  # duckdb raises its own error types for unreadable files
        click.echo(f"oisp-analyze: cannot read segments: {for_terminal(str(exc))}", err=True)
        sys.exit(1)
    click.echo(f"{len(files)} segment file(s), {len(rows)} connection(s)")
    for r in rows:
        # comm, the library path and the bytes are the captured process's: redacted and escaped
        click.echo(
            f"- pid {r['pid']} {for_terminal(str(r['comm']))} conn {for_terminal(str(r['conn_id']))}: "
            f"sent {r['egress_bytes']} B, "
            f"received {r['ingress_bytes']} B, missing {r['missing_bytes']} B"
            f"{', from start' if r['seen_from_start'] else ', start not seen'}"
            f"{', closed' if r['closed'] else ''} [{for_terminal(str(r['lib_path']))}]"
        )
        for direction, arrow in (("egress", ">"), ("ingress", "<")):
            head = first_bytes(files, r["conn_id"], direction)
            if head:
                click.echo(f"    {arrow} {_preview(head)}")


def _otlp_options(cfg, endpoint: str | None, protocol: str | None) -> None:
    """--otlp and --otlp-protocol over the config's export.otlp block (ValueError: not usable)."""
    from analyzer.sinks.otlp_settings import OtlpSettings, check_endpoint

    if endpoint is None and protocol is None:
        return
    if endpoint is None and cfg.otlp is None:
        raise ValueError("--otlp-protocol needs --otlp ENDPOINT (or export.otlp in --config)")
    if endpoint is not None:
        endpoint = check_endpoint(endpoint, where="--otlp")
        if cfg.otlp is None:
            cfg.otlp = OtlpSettings(endpoint=endpoint)
        cfg.otlp.endpoint = endpoint
    if protocol is not None:
        cfg.otlp.protocol = protocol


def _check_follow(paths, events_out, exchanges_out, duckdb_out) -> None:
    if len(paths) != 1 or Path(paths[0]).exists() and not Path(paths[0]).is_dir():
        raise click.UsageError("--follow reads one segments directory")
    if events_out is None or str(events_out) == "-":
        raise click.UsageError("--follow needs --out FILE (its checkpoint is kept next to it)")
    if exchanges_out is not None or duckdb_out is not None:
        raise click.UsageError("--follow writes events only (--out): not --exchanges or --duckdb")


def _check_outputs(inputs: list[Path], outputs: dict[str, Path | None]) -> None:
    """Usage errors in the output options, found before anything is read or written: a path that
    cannot be an output file (sinks/sink.py `output_problem`), two options naming the same file, an
    output that is one of the segments read. Opening checks again (what is at a path may change)."""
    from analyzer.sinks.sink import output_problem

    inputs_seen = {_file_key(p) for p in inputs} - {None}
    seen: dict[object, str] = {}
    for option, path in outputs.items():
        if path is None:
            continue
        if str(path) == "-":
            if option == "--duckdb":
                raise click.BadParameter("a DuckDB database is a file, not '-'", param_hint=f"'{option}'")
            key: object = "-"
        else:
            why = output_problem(path)
            if why:
                raise click.BadParameter(f"{path}: {why}", param_hint=f"'{option}'")
            key = _file_key(path)
        if key in inputs_seen:
            raise click.BadParameter(f"{path} is one of the segment files read", param_hint=f"'{option}'")
        if key in seen:
            raise click.UsageError(f"{seen[key]} and {option} both write to {path}")
        if key is not None:
            seen[key] = option


def _file_key(path: Path) -> object:
    """What identifies the file a path names: its inode if it exists (None for a device or a FIFO,
    which several outputs may share, e.g. /dev/null), else the absolute path it would have."""
    try:
        st = path.stat()
    except OSError:
        return Path(os.path.realpath(path))
    return (st.st_dev, st.st_ino) if stat.S_ISREG(st.st_mode) else None


def _follow(segments_dir: Path, events_out: Path, cfg) -> int:
    """Live mode until SIGTERM/SIGINT: analyzer/live/follow.py."""
    import logging
    import signal

    from analyzer.live.follow import FollowError, FollowOptions, run
    from analyzer.live.metrics import FollowMetrics, FollowStats
    from analyzer.live.stop_flag import StopFlag

    logging.basicConfig(level="INFO", stream=sys.stderr,
                        format="%(asctime)s oisp-analyze %(levelname)s %(message)s")
    log = logging.getLogger("oisp.analyze")
    stop = StopFlag()  # not a threading.Event: its set() can deadlock in a signal handler

    def on_signal(signum, _frame):
        log.info("received %s: finishing the current segment, then stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    stats = FollowStats(stall_seconds=cfg.stall_seconds)
    server = None
    if cfg.metrics_port is not None:
        from contract.metrics_server import MetricsServer

        try:
            server = MetricsServer(cfg.metrics_address, cfg.metrics_port, FollowMetrics(stats).registry(),
                                   ready=stats.is_ready, healthy=stats.is_healthy)
        except OSError as exc:
            log.error("cannot serve metrics on %s:%s: %s", cfg.metrics_address, cfg.metrics_port, exc)
            return 1
        log.info("metrics on http://%s:%d/metrics", cfg.metrics_address, server.port)
    opts = FollowOptions(segments_dir, events_out, cfg.poll_interval_seconds, cfg.connection_idle_seconds,
                         cfg.connection_timeout_seconds, cfg.output_max_bytes, cfg.output_keep)
    try:
        return run(opts, cfg, stats, stop)
    except (FollowError, OSError) as exc:
        log.error("%s", exc)
        return 1
    finally:
        if server is not None:
            server.close()


def _shows_progress(files: list[Path]) -> bool:
    """Whether a run over these files shows a bar: stderr is a terminal and there is more than one."""
    return sys.stderr.isatty() and len(files) > 1


def _progress(files: list[Path]):
    """The files, with a progress bar on stderr when it is a terminal."""
    if not _shows_progress(files):
        yield from files
        return
    with click.progressbar(files, label="segments", file=sys.stderr, show_pos=True) as bar:
        yield from bar


@contextmanager
def _parallel_progress(files: list[Path], workers: int):
    """run_parallel's progress callback: a bar on stderr of every worker's reading of every file (each
    reads them all, for its share of the connections) when it is a terminal, else None."""
    if not _shows_progress(files):
        yield None
        return
    with click.progressbar(length=len(files) * workers, label=f"segments x {workers} workers",
                           file=sys.stderr, show_pos=True) as bar:
        yield bar.update


def _analyze(files: list[Path], exchanges_out: Path | None, events_out: Path | None,
             duckdb_out: Path | None, cfg, workers: int | None = None) -> int:
    from functools import partial

    from analyzer.collector_pace import pace_for_batch
    from analyzer.heap_reuse import keep_freed_memory
    from analyzer.parallel.run import ParallelError, default_workers, run_parallel
    from analyzer.parallel.totals import Totals
    from analyzer.pipeline import Pipeline
    from analyzer.segments.reader import ReadReport, one_line, read_batches
    from analyzer.sinks.events_jsonl import EventsFile
    from analyzer.sinks.exchanges_jsonl import ExchangesFile

    output_errors: tuple[type[Exception], ...] = (OSError,)
    if duckdb_out:  # duckdb only with --duckdb: importing it took 70 ms of every run
        import duckdb

        from analyzer.sinks.duckdb_tables import DuckDBSink
        output_errors = (OSError, duckdb.Error)
    report = ReadReport()
    pipeline = Pipeline(cfg)  # the exporter first: one that cannot start leaves no file behind
    pace_for_batch()
    keep_freed_memory()
    try:
        if duckdb_out:
            pipeline.sinks.insert(0, DuckDBSink(duckdb_out))
        exchanges = partial(ExchangesFile, content=cfg.content, hash_key=cfg.hash_key, limits=cfg.limits)
        for sink, path in ((exchanges, exchanges_out), (EventsFile, events_out)):
            if path is not None:
                pipeline.sinks.append(sink(path))
    except output_errors as exc:  # the checks passed, yet opening failed (or a race)
        pipeline.close()
        click.echo(f"oisp-analyze: {one_line(str(exc))}", err=True)
        return 1
    workers = workers or default_workers(files)
    try:
        try:
            if workers > 1:  # analyzer/parallel/run.py: the same output, from several processes
                with _parallel_progress(files, workers) as progress:
                    totals = run_parallel(files, cfg, pipeline.sinks, workers, progress)
            else:
                pipeline.run(read_batches(_progress(files), report))
                totals = Totals.of(pipeline, report)
        finally:
            tail = "".join(", " + piece for piece in pipeline.close())
    except output_errors as exc:  # writing failed: a full disk, a pipe closed early
        click.echo(f"oisp-analyze: cannot write the output: {one_line(str(exc))}", err=True)
        return 1
    except ParallelError as exc:
        click.echo(f"oisp-analyze: {exc}", err=True)
        return 1
    for path, problem in totals.problems:
        click.echo(f"oisp-analyze: skipped {path}: {problem}", err=True)
    click.echo(
        f"oisp-analyze: {totals.files_read} of {len(files)} segment file(s), {totals.rows_read} rows, "
        f"{totals.connections} connection(s), {totals.exchanges} exchange(s) "
        f"({totals.incomplete} incomplete)"
        + (f", {totals.events} AI event(s)" if pipeline.wants_events else "")
        + (f", {totals.parse_errors} parse error(s)" if totals.parse_errors else "") + tail, err=True)
    return 1 if totals.problems and totals.files_read == 0 else 0
