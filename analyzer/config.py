"""Analyzer configuration: the `analyzer:` section of the same YAML file the recorder reads (one
ConfigMap for both), with `--content` on the command line overriding it.

    analyzer:
      content: full            # full | hash | none
      hash_key_file: /etc/oisp/hash.key   # secret for keyed hashes of API keys and content
      endpoints:               # your own AI endpoints: host[:port] -> provider (and API format)
        vllm.ml.svc:8000: {provider: vllm}
        llm-gateway.corp.example: {provider: openai_compatible, api_format: openai}
      otlp:                    # OTLP export: accepted and checked, not supported yet (a warning says so)
        endpoint: http://otel-collector.observability.svc:4318
        protocol: http/protobuf            # grpc | http/protobuf
        headers: {x-tenant: audit}
        insecure: false

Unknown keys are errors, as in the recorder's section."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import yaml

KNOWN_SECTIONS = {"recorder", "analyzer"}
API_FORMATS = {"openai", "anthropic", "google", "bedrock", "cohere", "ollama", "replicate"}
OTLP_PROTOCOLS = ("grpc", "http/protobuf")
OTLP_NOT_SUPPORTED = ("OTLP export is not supported yet: analyzer.otlp is checked and ignored "
                      "(events go to --out)")
log = logging.getLogger("oisp.analyze")


class AnalyzerConfigError(ValueError):
    pass


@dataclass
class AnalyzerConfig:
    content: str = "full"
    hash_key: bytes | None = None
    endpoints: dict[str, dict] = field(default_factory=dict)
    # Validated so a ConfigMap written for a later version fails now, not then; nothing exports yet.
    otlp: dict | None = None
    # live mode (--follow, analyzer/follow.py) and its metrics endpoint
    poll_interval_seconds: float = 1.0
    connection_idle_seconds: float = 5.0
    connection_timeout_seconds: float = 900.0
    output_max_bytes: int = 100 * 1024 * 1024
    output_keep: int = 5
    metrics_port: int | None = None  # None: no endpoint; 0: any free port (logged)
    metrics_address: str = "0.0.0.0"


# live-mode keys: name -> (type, least value)
_FOLLOW_KEYS = {"poll_interval_seconds": (float, 0.0), "connection_idle_seconds": (float, 0.0),
                "connection_timeout_seconds": (float, 0.0), "output_max_bytes": (int, 0),
                "output_keep": (int, 1), "metrics_port": (int, 0)}


def _follow_value(key: str, value):
    kind, least = _FOLLOW_KEYS[key]
    if value is None and key == "metrics_port":
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int) \
            or value < least or kind is float and value == 0 or key == "metrics_port" and value > 65535:
        what = {"metrics_port": "a port number (0: any free port) or null",
                "output_max_bytes": "a number of bytes (0: never rotate)",
                "output_keep": "a positive integer"}.get(key, "a positive number of seconds")
        raise AnalyzerConfigError(f"analyzer.{key} must be {what}, not {value!r}")
    return kind(value)


def _otlp(value) -> dict:
    """The shape of an OpenTelemetry exporter block (the OTEL_EXPORTER_OTLP_* settings, as keys)."""
    if not isinstance(value, dict):
        raise AnalyzerConfigError("analyzer.otlp must be a mapping (endpoint, protocol, headers, insecure)")
    unknown = set(value) - {"endpoint", "protocol", "headers", "insecure"}
    if unknown:
        raise AnalyzerConfigError(f"unknown key(s) in analyzer.otlp: {', '.join(sorted(map(str, unknown)))}")
    endpoint = value.get("endpoint")
    if not isinstance(endpoint, str) or not endpoint.startswith(("http://", "https://")):
        raise AnalyzerConfigError("analyzer.otlp.endpoint must be an http:// or https:// URL")
    if value.get("protocol", "grpc") not in OTLP_PROTOCOLS:
        raise AnalyzerConfigError(f"analyzer.otlp.protocol must be one of {', '.join(OTLP_PROTOCOLS)}")
    headers = value.get("headers", {})
    if not isinstance(headers, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                for k, v in headers.items()):
        raise AnalyzerConfigError("analyzer.otlp.headers must map header names to string values")
    if not isinstance(value.get("insecure", False), bool):
        raise AnalyzerConfigError("analyzer.otlp.insecure must be true or false")
    return dict(value)


def load(path: Path | None) -> AnalyzerConfig:
    cfg = AnalyzerConfig()
    if path is None:
        return cfg
    try:
        loaded = yaml.safe_load(Path(path).read_text()) or {}
    except OSError as exc:
        raise AnalyzerConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise AnalyzerConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if not isinstance(loaded, dict):
        raise AnalyzerConfigError(f"config file {path} must be a mapping of keys to values")
    unknown = set(loaded) - KNOWN_SECTIONS
    if unknown:
        names = ", ".join(sorted(map(str, unknown)))
        raise AnalyzerConfigError(f"config file {path}: unknown top-level key(s): {names}")
    section = loaded.get("analyzer") or {}
    if not isinstance(section, dict):
        raise AnalyzerConfigError(f"config file {path}: 'analyzer' must be a mapping")
    for key, value in section.items():
        if key == "content":
            if value not in ("full", "hash", "none"):
                raise AnalyzerConfigError("analyzer.content must be full, hash or none")
            cfg.content = value
        elif key == "hash_key_file":
            try:
                cfg.hash_key = Path(value).read_bytes().strip()
            except OSError as exc:
                raise AnalyzerConfigError(f"analyzer.hash_key_file {value}: {exc.strerror}") from None
            if len(cfg.hash_key) < 16:
                raise AnalyzerConfigError("analyzer.hash_key_file must hold at least 16 bytes of secret")
        elif key == "endpoints":
            if not isinstance(value, dict):
                raise AnalyzerConfigError("analyzer.endpoints must map host[:port] to {provider, api_format}")
            for endpoint, spec in value.items():
                if not isinstance(spec, dict) or not isinstance(spec.get("provider"), str) \
                        or set(spec) - {"provider", "api_format"}:
                    raise AnalyzerConfigError(
                        f"analyzer.endpoints.{endpoint}: needs provider (and optionally api_format)")
                if spec.get("api_format", "openai") not in API_FORMATS:
                    raise AnalyzerConfigError(f"analyzer.endpoints.{endpoint}: api_format must be one of "
                                              + ", ".join(sorted(API_FORMATS)))
                cfg.endpoints[str(endpoint)] = spec
        elif key == "otlp":
            cfg.otlp = _otlp(value)
            log.warning("%s", OTLP_NOT_SUPPORTED)
        elif key in _FOLLOW_KEYS:
            setattr(cfg, key, _follow_value(key, value))
        elif key == "metrics_address":
            if not isinstance(value, str) or not value:
                raise AnalyzerConfigError("analyzer.metrics_address must be an address to bind, e.g. 0.0.0.0")
            cfg.metrics_address = value
        else:
            raise AnalyzerConfigError(f"config file {path}: unknown key 'analyzer.{key}'")
    return cfg
