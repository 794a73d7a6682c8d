"""The `upload:` block of the sensor's config file: where `oisp-ship` puts published segments.

    upload:
      enabled: true
      bucket: oisp-segments
      prefix: segments
      endpoint_url: https://minio.storage:9000   # null: AWS S3
      region: null
      addressing_style: auto
      delete_after_upload: true
      analyzer_checkpoint: /output/.events.jsonl.checkpoint

Credentials are never in this file: boto3's default chain (AWS_ACCESS_KEY_ID and
AWS_SECRET_ACCESS_KEY, which the DaemonSet takes from a Secret; or a web identity, an instance role).
As everywhere in this file, unknown keys and values of the wrong type are errors naming the key.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from recorder.config import ConfigError

ADDRESSING_STYLES = ("auto", "path", "virtual")
# S3's rules for bucket names (S3-compatible stores follow them): 3-63 characters, lowercase
# letters, digits, '.' and '-', beginning and ending with a letter or digit.
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class UploadConfig:
    enabled: bool = False
    bucket: str | None = None
    prefix: str = "segments"  # keys: PREFIX/node=NODE/date=YYYY-MM-DD/NAME.parquet ("": no prefix)
    endpoint_url: str | None = None  # an S3-compatible store; None: AWS S3
    region: str | None = None  # None: boto3's default (AWS_REGION, AWS_DEFAULT_REGION), else us-east-1
    addressing_style: str = "auto"  # path for most S3-compatible stores reached by a bare host name
    # Remove the local file once its upload is verified (and the live analyzer is done with it);
    # false: uploaded segments stay until the recorder's quota deletes them.
    delete_after_upload: bool = True
    # The live analyzer's checkpoint: a segment it may still read is not deleted. None: do not wait.
    analyzer_checkpoint: Path | None = None
    poll_seconds: float = 5.0  # how often the directory is looked at
    retry_initial_seconds: float = 1.0  # the first wait after a failure, doubled each failure ...
    retry_max_seconds: float = 60.0  # ... up to this (with jitter): retried forever, never given up
    connect_timeout_seconds: float = 5.0
    read_timeout_seconds: float = 60.0
    stats_interval_seconds: float = 30.0  # how often the totals are logged

    def bucket_url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"


_KEYS = {f.name for f in fields(UploadConfig)}
_SECONDS = {"poll_seconds", "retry_initial_seconds", "retry_max_seconds", "connect_timeout_seconds",
            "read_timeout_seconds", "stats_interval_seconds"}


def _endpoint(value: Any) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"upload.endpoint_url must be an http:// or https:// URL, not {value!r}")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 (raises ValueError on a port that is not a number)
    except ValueError as exc:
        raise ConfigError(f"upload.endpoint_url {value!r} is not a URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"upload.endpoint_url {value!r} must be an http:// or https:// URL with a host, "
                          "e.g. https://minio.storage:9000")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username or parts.password:
        raise ConfigError(f"upload.endpoint_url {value!r} must be scheme://host[:port] only (no path, "
                          "query or credentials: those come from the Secret)")
    return value.rstrip("/")


def _prefix(value: Any) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"upload.prefix must be a string, not {value!r}")
    prefix = value.strip("/")
    parts = prefix.split("/") if prefix else []
    if _CONTROL.search(prefix) or any(p in ("", ".", "..") for p in parts):
        raise ConfigError(f"upload.prefix {value!r} must be '/'-separated names (no empty, '.' or '..' "
                          "part, no control character)")
    return prefix


def _coerce(key: str, value: Any) -> Any:
    if key in ("enabled", "delete_after_upload"):
        if not isinstance(value, bool):
            raise ConfigError(f"upload.{key} must be true or false, not {value!r}")
        return value
    if key in _SECONDS:
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value < math.inf:
            raise ConfigError(f"upload.{key} must be a positive number of seconds, not {value!r}")
        return float(value)
    if value is None and key in ("bucket", "endpoint_url", "region", "analyzer_checkpoint"):
        return None
    if key == "bucket":
        if not isinstance(value, str) or not _BUCKET.fullmatch(value) or ".." in value:
            raise ConfigError(f"upload.bucket {value!r} is not a bucket name (3-63 lowercase letters, "
                              "digits, '.' and '-', beginning and ending with a letter or digit)")
        return value
    if key == "prefix":
        return _prefix(value)
    if key == "endpoint_url":
        return _endpoint(value)
    if key == "addressing_style":
        if value not in ADDRESSING_STYLES:
            raise ConfigError(f"upload.addressing_style must be one of {', '.join(ADDRESSING_STYLES)}, "
                              f"not {value!r}")
        return value
    if key == "analyzer_checkpoint":
        if not isinstance(value, str) or not value:
            raise ConfigError(f"upload.analyzer_checkpoint must be a path (or null), not {value!r}")
        return Path(value)
    if not isinstance(value, str) or not value:  # region
        raise ConfigError(f"upload.{key} must be a non-empty string, not {value!r}")
    return value


def parse_upload(section: Any, where: str = "config") -> UploadConfig:
    """The `upload:` mapping (None: absent) as an UploadConfig; ConfigError names what is wrong."""
    if section is None:
        return UploadConfig()
    if not isinstance(section, dict):
        raise ConfigError(f"{where}: 'upload' must be a mapping")
    unknown = sorted(map(str, set(section) - _KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) in upload: {', '.join(unknown)}")
    cfg = UploadConfig(**{key: _coerce(key, value) for key, value in section.items()})
    if cfg.enabled and cfg.bucket is None:
        raise ConfigError(f"{where}: upload.enabled is true but upload.bucket is not set")
    if cfg.retry_initial_seconds > cfg.retry_max_seconds:
        raise ConfigError(f"{where}: upload.retry_initial_seconds ({cfg.retry_initial_seconds:g}) is over "
                          f"upload.retry_max_seconds ({cfg.retry_max_seconds:g})")
    return cfg


def load_upload_config(path: Path) -> UploadConfig:
    """The `upload:` block of the config file at `path` (the recorder's loader has checked the file's
    other sections and its shape)."""
    try:
        loaded = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {path} must be a mapping of keys to values")
    return parse_upload(loaded.get("upload"), f"config file {path}")
