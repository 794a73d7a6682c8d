"""Analyzer configuration: the `analyzer:` section of the same YAML file the recorder reads (one
ConfigMap for both), with `--content` on the command line overriding it.

    analyzer:
      content: full            # full | hash | none
      hash_key_file: /etc/oisp/hash.key   # secret for keyed hashes of API keys and content
      prices_file: /etc/oisp/prices.yaml  # your own prices over the shipped table (analyzer/ai/pricing.py)
      endpoints:               # your own AI endpoints: host[:port] -> provider (and API format)
        vllm.ml.svc:8000: {provider: vllm}
        llm-gateway.corp.example: {provider: openai_compatible, api_format: openai}
    export:
      otlp:                    # OTLP export (sinks/otlp_settings.py; `analyzer.otlp`: the same block)
        endpoint: otel-collector.monitoring:4317
        insecure: true

Budgets of the protocol layer (analyzer/model.py Limits): what one connection may cost, whatever
its bytes say. Each is a positive whole number; over it, input is dropped or left unparsed and the
connection lists the key in its limits_hit:

    analyzer:
      max_body_bytes: 67108864             # body bytes kept per request or response (64 MiB)
      max_undetected_bytes: 4194304        # bytes held per connection before its protocol is known;
                                           # over it the protocol is decided on what came (4 MiB:
                                           # chunks may come out of order, and one direction alone
                                           # may not say what the protocol is)
      max_reorder_bytes: 16777216          # bytes held per stream beyond a hole before the hole is
                                           # given up as missing (16 MiB)
      max_header_list_bytes: 1048576       # decoded bytes of one HTTP/2 header block (HPACK sizes)
      max_connection_header_bytes: 16777216  # decoded HTTP/2 header bytes per connection; over it
                                           # header blocks are dropped and headers unreliable
      max_hpack_table_bytes: 65536         # HPACK dynamic table size accepted from a peer
      max_open_streams: 1000               # HTTP/2 streams followed at once per connection (the
                                           # oldest is handed out as it stands)
      max_gap_records: 16                  # gaps recorded per exchange; more are only counted
      max_connection_body_bytes: 268435456 # body bytes held across one connection's unfinished
                                           # exchanges (HTTP/2 open streams, HTTP/1 in flight); over
                                           # it, more body bytes are dropped, the message capped
      max_pipelined_requests: 1000         # HTTP/1 writes waiting behind the exchange in front
                                           # (pipelined requests, responses to a lost request); over
                                           # it, that exchange is handed out as it stands

Budgets of the AI layer (analyzer/ai), for the bodies events are built from, and for --exchanges:

    analyzer:
      max_json_bytes: 33554432             # JSON text parsed at once: a body, a stream event; larger
                                           # is noted request_body_not_parsed:json_too_large (32 MiB)
      max_json_depth: 128                  # nesting of that JSON (json_too_deep over it)
      max_event_line_bytes: 8388608        # one SSE or NDJSON line; longer ones are cut (8 MiB)
      max_decoded_body_bytes: 67108864     # a body after its Content-Encoding is undone; a larger
                                           # one is flagged as a bomb, left undecoded (64 MiB)

Unknown keys are errors, as in the recorder's section."""

from __future__ import annotations

import errno
import logging
import math
import os
import secrets
import stat
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import yaml

from analyzer.ai.pricing import PricesError, PriceTable, bundle_table, load_prices
from analyzer.model import Limits
from analyzer.sinks import otlp_settings
from analyzer.sinks.otlp_settings import OtlpSettings

KEY_FILE = ".oisp-hash.key"  # the generated hash key, beside the first output file
KNOWN_SECTIONS = {"recorder", "analyzer", "export", "upload"}  # upload: oisp-ship (recorder/shipping)
API_FORMATS = {"openai", "anthropic", "google", "bedrock", "cohere", "ollama", "replicate"}
log = logging.getLogger("oisp.analyze")


class AnalyzerConfigError(ValueError):
    pass


@dataclass
class AnalyzerConfig:
    content: str = "full"
    hash_key: bytes | None = None
    endpoints: dict[str, dict] = field(default_factory=dict)
    # prices: the bundle's, under analyzer.prices_file's (analyzer/ai/pricing.py)
    prices: PriceTable = field(default_factory=bundle_table)
    otlp: OtlpSettings | None = None  # export.otlp (or analyzer.otlp): analyzer/sinks/otlp_export.py
    # live mode (--follow, analyzer/live/follow.py) and its metrics endpoint
    poll_interval_seconds: float = 1.0
    connection_idle_seconds: float = 5.0
    connection_timeout_seconds: float = 900.0
    output_max_bytes: int = 100 * 1024 * 1024
    output_keep: int = 5
    metrics_port: int | None = None  # None: no endpoint; 0: any free port (logged)
    metrics_address: str = "0.0.0.0"
    stall_seconds: float = 300.0  # busy this long without progress: /healthz fails (analyzer/live/metrics.py)
    limits: Limits = field(default_factory=Limits)  # budgets of the protocol layer (keys as named)


_LIMIT_KEYS = {f.name for f in fields(Limits)}


def _limit_value(key: str, value) -> int:
    """A budget: a positive whole number (a float such as 1e6 is taken when whole and finite)."""
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise AnalyzerConfigError(f"analyzer.{key} must be a positive whole number, not {value!r}")
    return value


# live-mode keys: name -> (type, least value)
_FOLLOW_KEYS = {"poll_interval_seconds": (float, 0.0), "connection_idle_seconds": (float, 0.0),
                "connection_timeout_seconds": (float, 0.0), "output_max_bytes": (int, 0),
                "output_keep": (int, 1), "metrics_port": (int, 0),
                "stall_seconds": (float, 0.0)}


# seconds that may be 0: finished exchanges handed out at once (analyzer/live/follow.py drain)
_ZERO_SECONDS = {"connection_idle_seconds"}


def _follow_value(key: str, value):
    kind, least = _FOLLOW_KEYS[key]
    if value is None and key == "metrics_port":
        return None
    zero_ok = kind is not float or key in _ZERO_SECONDS
    if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int) \
            or not least <= value < math.inf or value == 0 and not zero_ok \
            or key == "metrics_port" and value > 65535:
        what = {"metrics_port": "a port number (0: any free port) or null",
                "output_max_bytes": "a number of bytes (0: never rotate)",
                "output_keep": "a positive integer",
                "connection_idle_seconds": "a number of seconds (0: at once)",
                }.get(key, "a positive number of seconds")
        raise AnalyzerConfigError(f"analyzer.{key} must be {what}, not {value!r}")
    return kind(value)


def _otlp(value, where: str) -> OtlpSettings:
    try:
        return otlp_settings.parse(value, where)
    except otlp_settings.OtlpSettingsError as exc:
        raise AnalyzerConfigError(str(exc)) from None


def _export(value) -> OtlpSettings | None:
    """The `export:` section: where events go besides --out (OTLP only, for now)."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise AnalyzerConfigError("'export' must be a mapping (otlp: ...)")
    unknown = set(value) - {"otlp"}
    if unknown:
        raise AnalyzerConfigError(f"unknown key(s) in export: {', '.join(sorted(map(str, unknown)))}")
    return _otlp(value["otlp"], "export.otlp") if "otlp" in value else None


def load(path: Path | None) -> AnalyzerConfig:
    cfg = AnalyzerConfig()
    if path is None:
        return cfg
    try:
        loaded = yaml.safe_load(Path(path).read_text()) or {}
    except OSError as exc:
        raise AnalyzerConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise AnalyzerConfigError(f"config file {path} is not UTF-8 text") from None
    except yaml.YAMLError as exc:
        raise AnalyzerConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if not isinstance(loaded, dict):
        raise AnalyzerConfigError(f"config file {path} must be a mapping of keys to values")
    unknown = set(loaded) - KNOWN_SECTIONS
    if unknown:
        names = ", ".join(sorted(map(str, unknown)))
        raise AnalyzerConfigError(f"config file {path}: unknown top-level key(s): {names}")
    export = _export(loaded.get("export"))
    section = loaded.get("analyzer") or {}
    if not isinstance(section, dict):
        raise AnalyzerConfigError(f"config file {path}: 'analyzer' must be a mapping")
    for key, value in section.items():
        if key == "content":
            if value not in ("full", "hash", "none"):
                raise AnalyzerConfigError("analyzer.content must be full, hash or none")
            cfg.content = value
        elif key == "hash_key_file":
            if not isinstance(value, str) or not value or "\0" in value:
                raise AnalyzerConfigError(f"analyzer.hash_key_file must be the path of a file, not {value!r}")
            try:
                cfg.hash_key = Path(value).read_bytes().strip()
            except OSError as exc:
                raise AnalyzerConfigError(f"analyzer.hash_key_file {value}: {exc.strerror}") from None
            if len(cfg.hash_key) < 16:
                raise AnalyzerConfigError("analyzer.hash_key_file must hold at least 16 bytes of secret")
        elif key == "prices_file":
            if not isinstance(value, str) or not value or "\0" in value:
                raise AnalyzerConfigError(f"analyzer.prices_file must be the path of a file, not {value!r}")
            try:
                cfg.prices = load_prices(Path(value))
            except PricesError as exc:
                raise AnalyzerConfigError(f"analyzer.prices_file: {exc}") from None
        elif key == "endpoints":
            if not isinstance(value, dict):
                raise AnalyzerConfigError("analyzer.endpoints must map host[:port] to {provider, api_format}")
            for endpoint, spec in value.items():
                if not isinstance(spec, dict) or not isinstance(spec.get("provider"), str) \
                        or set(spec) - {"provider", "api_format"}:
                    raise AnalyzerConfigError(
                        f"analyzer.endpoints.{endpoint}: needs provider (and optionally api_format)")
                api_format = spec.get("api_format", "openai")
                if not isinstance(api_format, str) or api_format not in API_FORMATS:
                    raise AnalyzerConfigError(f"analyzer.endpoints.{endpoint}: api_format must be one of "
                                              + ", ".join(sorted(API_FORMATS)))
                cfg.endpoints[str(endpoint)] = spec
        elif key == "otlp":
            cfg.otlp = _otlp(value, "analyzer.otlp")  # the first name of export.otlp, still accepted
        elif key in _LIMIT_KEYS:
            cfg.limits = replace(cfg.limits, **{key: _limit_value(key, value)})
        elif key in _FOLLOW_KEYS:
            setattr(cfg, key, _follow_value(key, value))
        elif key == "metrics_address":
            if not isinstance(value, str) or not value:
                raise AnalyzerConfigError("analyzer.metrics_address must be an address to bind, e.g. 0.0.0.0")
            cfg.metrics_address = value
        else:
            raise AnalyzerConfigError(f"config file {path}: unknown key 'analyzer.{key}'")
    if export is not None:
        if cfg.otlp is not None:
            raise AnalyzerConfigError(f"config file {path}: OTLP export is configured twice (export.otlp and "
                                      "analyzer.otlp): keep export.otlp")
        cfg.otlp = export
    return cfg


def key_path(outputs: list[Path | None]) -> Path:
    """Where the installation's hash key is kept without hash_key_file: beside the first output file,
    or, writing only to stdout (or a collector), in the user's state directory."""
    for out in outputs:
        if out is not None and str(out) != "-":
            return Path(out).parent / KEY_FILE
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "oisp-sensor" / "hash.key"


def resolve_hash_key(cfg: AnalyzerConfig, outputs: list[Path | None], make_dir: bool = False) -> None:
    """Give cfg a hash key: hash_key_file's, else the installation's (installation_key, key_path).
    make_dir: create the output's directory if need be (live mode does, for its events file)."""
    if cfg.hash_key is not None:
        return
    path = key_path(outputs)
    if make_dir or not any(out is not None and str(out) != "-" for out in outputs):
        try:
            # the state directory is the user's alone; an output directory as live mode makes it
            path.parent.mkdir(mode=0o777 if make_dir else 0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise AnalyzerConfigError(f"cannot create {path.parent} for the hash key: {exc.strerror}") \
                from None
    cfg.hash_key = installation_key(path)


def installation_key(path: Path) -> bytes:
    """The hash key kept at `path`: made once (32 random bytes, hex, mode 0600), read back on later
    runs. A key file that is a link, not ours or readable by others is refused (AnalyzerConfigError):
    whoever could swap or read it could guess the hashes."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        return _read_key(path)
    except OSError as exc:
        raise AnalyzerConfigError(f"cannot create the hash key file {path}: {exc.strerror}") from None
    key = secrets.token_hex(32).encode()
    with os.fdopen(fd, "wb") as f:
        f.write(key + b"\n")
    return key


def _read_key(path: Path) -> bytes:
    refuse = f"refusing the hash key file {path}:"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        what = "it is a symbolic link" if exc.errno == errno.ELOOP else exc.strerror
        raise AnalyzerConfigError(f"{refuse} {what}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise AnalyzerConfigError(f"{refuse} not a regular file")
        if st.st_uid != os.geteuid():
            raise AnalyzerConfigError(f"{refuse} owned by uid {st.st_uid}, not by this user")
        if stat.S_IMODE(st.st_mode) != 0o600:
            raise AnalyzerConfigError(f"{refuse} mode {stat.S_IMODE(st.st_mode):o}, not 600")
        key = os.read(fd, 4096).strip()
    finally:
        os.close(fd)
    if len(key) < 16:
        raise AnalyzerConfigError(f"{refuse} it holds less than 16 bytes of secret")
    return key
