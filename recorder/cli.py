"""`oisp-record`: the command line of the recorder."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from recorder.capture.preflight import PreflightError
from recorder.config import ConfigError, load_config

log = logging.getLogger("oisp.record")


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--segments-dir", type=click.Path(path_type=Path), help="Directory to write segments to.")
@click.option("--config", "config_file", type=click.Path(path_type=Path),
              help="YAML config file; its 'recorder' section may set every option.")
@click.option("--ready-file", type=click.Path(path_type=Path),
              help="File created once every probe is attached (removed on exit).")
@click.option("--duration", type=click.FloatRange(min=0, min_open=True),
              help="Stop after this many seconds (default: run until SIGINT/SIGTERM).")
@click.option("--pid", "pids", type=int, multiple=True, help="Capture only this process (repeatable).")
@click.option("--comm", "comms", multiple=True, help="Capture only this command name (repeatable).")
@click.option("--cgroup", "cgroups", multiple=True, help="Capture only this cgroup v2 path (repeatable).")
@click.option("--library", "extra_libraries", multiple=True,
              help="Also probe this file (a libssl, or a binary linking OpenSSL statically).")
@click.option("--max-total-bytes", "segments_max_total_bytes", type=click.IntRange(min=0),
              help="Quota of the segments directory: delete the oldest segments beyond it (0: none).")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]))
@click.option("--metrics-port", type=click.IntRange(0, 65535),
              help="Serve Prometheus metrics on this port (/metrics, /ready, /healthz; 0: any free port).")
@click.option("--check", is_flag=True, help="Only check that this node can record (exit 0 if so, 1 if not).")
def main(segments_dir, config_file, ready_file, duration, pids, comms, cgroups, extra_libraries,
         segments_max_total_bytes, log_level, metrics_port, check):
    """Record the plaintext of TLS connections on this node into Parquet segments.

    Needs root (or CAP_BPF, CAP_PERFMON and CAP_SYS_PTRACE), bcc and kernel headers. Exit codes: 0 ok,
    1 runtime failure, 2 usage or configuration error.
    """
    if check:
        logging.basicConfig(level="INFO", stream=sys.stderr, format="oisp-record: %(message)s")
        from recorder.capture import preflight

        try:
            preflight.run_all()
        except PreflightError as exc:
            log.error("cannot record here: %s", exc)
            sys.exit(1)
        log.info("this node can record")
        sys.exit(0)
    try:
        cfg = load_config(config_file, {
            "segments_dir": segments_dir, "ready_file": ready_file, "duration": duration,
            "pids": pids, "comms": comms, "cgroups": cgroups, "extra_libraries": extra_libraries,
            "segments_max_total_bytes": segments_max_total_bytes, "log_level": log_level,
            "metrics_port": metrics_port,
        })
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    logging.basicConfig(
        level=cfg.log_level.upper(), stream=sys.stderr,
        format="%(asctime)s oisp-record %(levelname)s %(message)s",
    )
    from recorder.run import record  # imported here so --help and config errors never need bcc or pyarrow

    try:
        code = record(cfg)
    except PreflightError as exc:
        log.error("%s", exc)
        sys.exit(1)
    sys.exit(code)
