"""oisp-ship's counters, logged as `totals {...}` and served as Prometheus metrics (`--metrics-port`,
contract/metrics_server.py), named `oisp_shipper_<counter>_total` and `oisp_shipper_<gauge>`."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily


@dataclass
class ShipStats:
    segments_uploaded: int = 0
    bytes_uploaded: int = 0
    segments_already_there: int = 0  # found verified in the store (a run killed before deleting)
    segments_deleted: int = 0  # removed locally after a verified upload
    upload_failures: int = 0  # attempts the store refused or never answered
    verify_failures: int = 0  # uploads whose object was not the segment (of upload_failures)
    retries: int = 0  # attempts at a segment after a failed one
    segments_lost: int = 0  # deleted (the recorder's quota, a full disk) before they were uploaded
    bytes_lost: int = 0
    segments_not_shippable: int = 0  # not a complete segment of the recorder's: never uploaded


@dataclass
class ShipGauges:
    pending_segments: int = 0  # published, not uploaded yet
    pending_bytes: int = 0
    awaiting_analyzer: int = 0  # uploaded, kept until the live analyzer is done with them
    store_failing: int = 0  # failures in a row (0: the last attempt worked)


_HELP = {
    "segments_uploaded": "segments uploaded and verified",
    "bytes_uploaded": "bytes of segments uploaded and verified",
    "segments_already_there": "segments found already uploaded and verified (no upload needed)",
    "segments_deleted": "local segments deleted after a verified upload",
    "upload_failures": "upload attempts that failed (store unreachable, refused, or not verified)",
    "verify_failures": "uploads whose stored object did not match the segment",
    "retries": "upload attempts at a segment whose previous attempt failed",
    "segments_lost": "segments deleted locally before they were uploaded (the recorder's quota, a full disk)",
    "bytes_lost": "bytes of segments deleted locally before they were uploaded",
    "segments_not_shippable": "files named like segments that are not complete segments of the recorder's",
    "pending_segments": "published segments not uploaded yet",
    "pending_bytes": "bytes of published segments not uploaded yet",
    "awaiting_analyzer": "uploaded segments kept until the live analyzer is done with them",
    "store_failing": "store failures in a row (0: the last attempt worked)",
}


class ShipperMetrics:
    """A prometheus collector over the shipper's counters (read as they are: plain integers)."""

    def __init__(self, stats: ShipStats, gauges: ShipGauges, enabled: bool = True):
        self.stats = stats
        self.gauges = gauges
        self.enabled = enabled

    def collect(self):
        yield GaugeMetricFamily("oisp_shipper_enabled", "1 when upload.enabled is true (0: it idles)",
                                value=int(self.enabled))
        for name, value in asdict(self.stats).items():
            yield CounterMetricFamily(f"oisp_shipper_{name}", _HELP[name], value=value)
        for name, value in asdict(self.gauges).items():
            yield GaugeMetricFamily(f"oisp_shipper_{name}", _HELP[name], value=value)

    def registry(self) -> CollectorRegistry:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(self)
        return registry
