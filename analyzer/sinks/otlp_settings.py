"""The OTLP export settings: the `export: otlp:` block of the config file (the older `analyzer.otlp`
is the same block under another name), checked as strictly as the rest of the file.

    export:
      otlp:
        endpoint: otel-collector.monitoring:4317   # host:port, or an http:// or https:// URL
        protocol: grpc                             # grpc | http/protobuf
        insecure: true                             # host:port without TLS (a URL's scheme decides)
        headers: {x-tenant: audit}
        timeout_seconds: 10                        # one export, the exporter's own retries included
        ca_file: /etc/oisp/collector-ca.pem        # TLS: trust this CA instead of the system's
        ...                                        # queue, batch, retry, metric names: docs/export.md
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from analyzer.http.redaction import REDACTED, redact_text, redact_url

PROTOCOLS = ("grpc", "http/protobuf")
SIGNALS = ("traces", "logs", "metrics")
DEFAULT_METRIC_NAMES = {"token_usage": "gen_ai.client.token.usage",
                        "operation_duration": "gen_ai.client.operation.duration"}
_HOST_PORT = re.compile(r"^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9_.-]+):\d{1,5}$")
_METRIC_NAME = re.compile(r"[a-zA-Z][-_./a-zA-Z0-9]{0,254}")  # the OpenTelemetry API's instrument names


class OtlpSettingsError(ValueError):
    pass


@dataclass
class OtlpSettings:
    endpoint: str
    protocol: str = "grpc"
    insecure: bool | None = None  # host:port endpoints: true for plaintext (default TLS)
    headers: dict[str, str] = field(default_factory=dict)
    timeout_seconds: float = 10.0
    ca_file: str | None = None
    queue_size: int = 2048  # calls waiting for export; more are dropped (and counted), never waited for
    batch_size: int = 256  # calls per export request
    retries: int = 2  # a failed batch is tried again this many times, with backoff, then dropped
    retry_backoff_seconds: float = 1.0  # first wait after a failure; doubles, up to 30 s
    flush_timeout_seconds: float = 10.0  # at the end, how long delivering what is queued may take
    metrics_interval_seconds: float = 60.0
    signals: tuple[str, ...] = SIGNALS
    metric_names: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_METRIC_NAMES))

    @property
    def plaintext(self) -> bool:
        # a URL's scheme decides (as in the OpenTelemetry exporters); `insecure` is for host:port
        if "://" in self.endpoint:
            return self.endpoint.startswith("http://")
        return bool(self.insecure)

    def grpc_target(self) -> str:
        """host:port for a gRPC channel."""
        return urlsplit(self.endpoint).netloc if "://" in self.endpoint else self.endpoint

    def http_url(self, signal: str) -> str:
        """The URL of one signal for OTLP/HTTP: the base endpoint plus /v1/traces, /v1/logs, /v1/metrics."""
        base = self.endpoint if "://" in self.endpoint else \
            f"{'http' if self.plaintext else 'https'}://{self.endpoint}"
        return f"{base.rstrip('/')}/v1/{signal}"

    def describe(self) -> str:
        """The endpoint for a log line: never its userinfo or secret query parameters."""
        return f"{redact_url(self.endpoint)} ({self.protocol}{', plaintext' if self.plaintext else ', TLS'})"

    def scrub(self, text: str) -> str:
        """A message (an exporter's error, an exception) fit to log: the configured header values and
        the endpoint's credentials taken out, key-shaped strings too."""
        for value in sorted(self.headers.values(), key=len, reverse=True):
            if len(value) >= 4:
                text = text.replace(value, REDACTED)
        userinfo = urlsplit(self.endpoint).netloc.rpartition("@")[0] if "://" in self.endpoint else ""
        if userinfo:
            text = text.replace(userinfo, REDACTED)
        return redact_text(text)


_NUMBERS = {"timeout_seconds": (float, 0.0), "queue_size": (int, 1), "batch_size": (int, 1),
            "retries": (int, 0), "retry_backoff_seconds": (float, 0.0), "flush_timeout_seconds": (float, 0.0),
            "metrics_interval_seconds": (float, 0.0)}
KEYS = {"endpoint", "protocol", "insecure", "headers", "ca_file", "signals", "metric_names", *_NUMBERS}


def check_endpoint(endpoint, where: str = "export.otlp") -> str:
    is_url = isinstance(endpoint, str) and endpoint.startswith(("http://", "https://"))
    if is_url and urlsplit(endpoint).hostname:
        return endpoint
    if isinstance(endpoint, str) and _HOST_PORT.match(endpoint):
        return endpoint
    raise OtlpSettingsError(f"{where}.endpoint must be host:port or an http:// or https:// URL, "
                            f"not {redact_text(repr(endpoint))}")


def parse(value, where: str = "export.otlp") -> OtlpSettings:
    """Settings from the config block; errors name the key (`where` is the block's path)."""
    if not isinstance(value, dict):
        raise OtlpSettingsError(f"{where} must be a mapping (endpoint, protocol, headers, insecure, ...)")
    unknown = set(value) - KEYS
    if unknown:
        raise OtlpSettingsError(f"unknown key(s) in {where}: {', '.join(sorted(map(str, unknown)))}")
    s = OtlpSettings(endpoint=check_endpoint(value.get("endpoint"), where))
    protocol = value.get("protocol", "grpc")
    if protocol not in PROTOCOLS:
        raise OtlpSettingsError(f"{where}.protocol must be one of {', '.join(PROTOCOLS)}")
    s.protocol = protocol
    headers = value.get("headers") or {}
    if not isinstance(headers, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                for k, v in headers.items()):
        raise OtlpSettingsError(f"{where}.headers must map header names to string values")
    s.headers = dict(headers)
    insecure = value.get("insecure")
    if insecure is not None and not isinstance(insecure, bool):
        raise OtlpSettingsError(f"{where}.insecure must be true or false")
    s.insecure = insecure
    ca_file = value.get("ca_file")
    if ca_file is not None:
        if not isinstance(ca_file, str) or not Path(ca_file).is_file():
            raise OtlpSettingsError(f"{where}.ca_file must be a readable file of PEM certificates")
        s.ca_file = ca_file
    for key, (kind, least) in _NUMBERS.items():
        if key not in value:
            continue
        v = value[key]
        # .nan and .inf are YAML floats too: never a timeout or a size
        ok = not isinstance(v, bool) and isinstance(v, (int, float) if kind is float else int) \
            and least <= v < math.inf
        positive = key in ("timeout_seconds", "metrics_interval_seconds")
        if not ok or positive and v == 0:
            what = f"an integer of at least {least}" if kind is int else \
                "a positive number of seconds" if positive else "a number of seconds (0 or more)"
            raise OtlpSettingsError(f"{where}.{key} must be {what}, not {v!r}")
        setattr(s, key, kind(v))
    signals = value.get("signals", list(SIGNALS))
    if not isinstance(signals, list) or not signals \
            or not all(isinstance(x, str) and x in SIGNALS for x in signals):
        raise OtlpSettingsError(f"{where}.signals must be a non-empty list of {', '.join(SIGNALS)}")
    s.signals = tuple(x for x in SIGNALS if x in signals)
    names = value.get("metric_names") or {}
    if not isinstance(names, dict) or set(names) - set(DEFAULT_METRIC_NAMES) \
            or not all(isinstance(v, str) and _METRIC_NAME.fullmatch(v) for v in names.values()):
        raise OtlpSettingsError(f"{where}.metric_names may rename {' and '.join(DEFAULT_METRIC_NAMES)} "
                                "(instrument names: a letter, then letters, digits, _ . - /)")
    s.metric_names = {**DEFAULT_METRIC_NAMES, **names}
    return s
