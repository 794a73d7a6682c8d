"""`oisp-ship`: upload the recorder's published segments to S3-compatible storage (the `upload:` block
of the config file), a process of its own beside the recorder: the store's latency and outages never
reach the capture loop."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from pathlib import Path

import click

from contract.metrics_server import MetricsServer
from recorder.config import ConfigError, load_config
from recorder.shipping.config import UploadConfig, load_upload_config
from recorder.shipping.metrics import ShipGauges, ShipperMetrics, ShipStats

log = logging.getLogger("oisp.ship")


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_file", type=click.Path(path_type=Path), required=True,
              help="The sensor's YAML config file: its 'upload' block, and recorder.segments_dir.")
@click.option("--segments-dir", type=click.Path(path_type=Path),
              help="The recorder's segments directory (default: recorder.segments_dir).")
@click.option("--once", is_flag=True, help="One pass, then exit (1 if an upload failed).")
@click.option("--metrics-port", type=click.IntRange(0, 65535),
              help="Serve Prometheus metrics on this port (/metrics, /ready, /healthz; 0: any free port).")
@click.option("--metrics-address", default="0.0.0.0", show_default=True, help="... bound to this address.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]),
              help="Default: recorder.log_level.")
def main(config_file, segments_dir, once, metrics_port, metrics_address, log_level):
    """Upload published segments to S3-compatible storage, verify them, then delete them locally.

    Exit codes: 0 ok; 1 runtime failure (with --once: an upload failed); 2 usage or configuration error.
    """
    try:
        rec = load_config(config_file, {"segments_dir": segments_dir})
        cfg = load_upload_config(config_file)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    logging.basicConfig(level=(log_level or rec.log_level).upper(), stream=sys.stderr,
                        format="%(asctime)s oisp-ship %(levelname)s %(message)s")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    metrics = ShipperMetrics(ShipStats(), ShipGauges(), enabled=cfg.enabled)
    server = None
    if metrics_port is not None:  # served disabled too: the pod's probes ask it
        try:
            server = MetricsServer(metrics_address, metrics_port, metrics.registry())
        except OSError as exc:
            log.error("cannot serve metrics on %s:%d: %s", metrics_address, metrics_port, exc.strerror)
            sys.exit(1)
        log.info("metrics on http://%s:%d/metrics", metrics_address, server.port)
    try:
        sys.exit(_ship(cfg, rec.segments_dir, metrics, once, stop))
    finally:
        if server is not None:
            server.close()


def _ship(cfg: UploadConfig, segments_dir: Path, metrics: ShipperMetrics, once: bool,
          stop: threading.Event) -> int:
    if not cfg.enabled:
        log.info("upload.enabled is false: nothing to ship%s", "" if once else " (idle until stopped)")
        if not once:
            stop.wait()
        return 0
    # imported here so that a disabled shipper never loads boto3
    from botocore.exceptions import BotoCoreError

    from recorder.shipping.shipper import Shipper

    try:
        shipper = Shipper(cfg, segments_dir)
    except (BotoCoreError, ValueError) as exc:
        raise click.UsageError(f"upload: {exc}") from None
    metrics.stats, metrics.gauges = shipper.stats, shipper.gauges
    if once:
        shipper.run_pass()
        log.info("totals %s", shipper.totals())
        return 1 if shipper.backoff.failures else 0
    shipper.run(stop)
    return 0
