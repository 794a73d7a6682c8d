"""Recorder configuration: defaults, a YAML file (what a Kubernetes ConfigMap mounts), and flags.

Flags override the file; the file overrides the defaults. Unknown keys and values of the wrong type
are errors, reported with the key's name, never silently ignored.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """The configuration is malformed: a usage error (exit code 2)."""


_SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
KUBERNETES_METADATA_MODES = ("off", "apiserver", "auto")
# keys of earlier versions, refused with what replaced them rather than as unknown
REMOVED_KEYS = {
    "kubelet_url": "the kubelet mode was removed: pod metadata comes from a watch on the API server "
                   "(kubernetes_metadata: auto or apiserver; kubernetes_api_url)",
    "kubernetes_refresh_seconds": "pod metadata comes from a watch now, not from a list fetched on a miss",
}
ATTACH_MODES = ("auto", "multi", "links", "slots")
PLAINTEXT_HOOKS = ("auto", "socket", "syscalls")
# lib_id is a u16 in every record (bpf/tls_capture.h)
MAX_LIBRARY_FILES = 65535


def default_node_name(environ) -> str:
    """$NODE_NAME (a DaemonSet sets it from the downward API's spec.nodeName), else the host name: in
    a pod without hostNetwork the host name is the pod's name, which would label every segment and
    event with the sensor pod instead of the node."""
    return environ.get("NODE_NAME") or socket.gethostname()


@dataclass
class RecorderConfig:
    segments_dir: Path | None = None
    ready_file: Path | None = None
    duration: float | None = None  # seconds; None runs until SIGINT/SIGTERM
    node_name: str = field(default_factory=lambda: default_node_name(os.environ))
    # Capture filters: empty means everything.
    pids: list[int] = field(default_factory=list)
    comms: list[str] = field(default_factory=list)
    cgroups: list[str] = field(default_factory=list)  # cgroup v2 paths, e.g. /system.slice/x.service
    # Library files to probe besides those discovered (e.g. a binary that links OpenSSL statically).
    extra_libraries: list[str] = field(default_factory=list)
    discover_libraries: bool = True
    # Probe the libssl of every container image layer on the node before a container maps it (when
    # discovering and capturing everything: with capture filters only the filtered processes count).
    scan_image_layers: bool = True
    # Stop (SIGSTOP) a wanted process at the exec or executable mapping of a file not judged yet, until
    # that file is judged and, if TLS, probed (SIGCONT): its first TLS call is then captured however
    # soon it comes. One hold per file (1-40 ms, longer for a large Go program), the first time.
    hold_new_files: bool = True
    # Plaintext HTTP (no TLS) to in-cluster model servers: connections to (or accepted on) these ports,
    # whose first bytes are an HTTP/1.x request or the HTTP/2 preface, optionally only with these
    # server addresses (CIDRs; empty: any). Defaults: KServe/gateways (80), LM Studio (1234), TGI's
    # router (3000), LiteLLM proxy (4000), vLLM and most OpenAI-compatible servers (8000), TGI, LocalAI
    # and KServe (8080), Ollama (11434).
    plaintext_capture: bool = True
    plaintext_ports: list[int] = field(default_factory=lambda: [80, 1234, 3000, 4000, 8000, 8080, 11434])
    plaintext_addresses: list[str] = field(default_factory=list)
    # Where plaintext reads and writes are seen: "socket" (the socket layer's tracepoints, Linux 6.3+:
    # file and pipe I/O never passes them), "syscalls" (the raw system-call tracepoints, which every
    # system call passes), or "auto" (socket where the kernel has it).
    plaintext_hooks: str = "auto"
    # Library files probed at once; files no process maps any more are detached and their id reused.
    # With BPF links (Linux 5.15+) a file costs a few fds and no compile; on older kernels each file
    # takes a slot compiled into the BPF program, and at most MAX_COMPILED_SLOTS are compiled.
    max_library_files: int = 4096
    # How probes are attached: "multi" (uprobe-multi BPF links, Linux 6.6+), "links" (perf-event BPF
    # links, 5.15+; slow to detach: about 0.2 s a probe), "slots" (bcc, a copy of the entry programs per
    # file compiled at start, at most 64 files), or "auto" (the first the kernel has).
    attach_mode: str = "auto"
    # Full rescan of /proc for TLS libraries; exec events trigger a check of the new process at once.
    rescan_interval_seconds: float = 10.0
    # Segment rotation
    segment_max_bytes: int = 64 * 1024 * 1024
    segment_max_seconds: float = 60.0
    # Quota of the segments directory: the oldest segments are deleted beyond it (0: no quota).
    segments_max_total_bytes: int = 0
    flush_interval_seconds: float = 0.25
    # How much of one call is captured: chunk_size * max_chunks_per_call bytes (default 2 MiB).
    chunk_size: int = 16384
    max_chunks_per_call: int = 128
    ringbuf_bytes: int = 64 * 1024 * 1024
    stats_interval_seconds: float = 5.0
    log_level: str = "info"
    # Pod, container, workload and service account from a watch on the node's pods (identity/pods.py).
    kubernetes_metadata: str = "auto"  # off | apiserver | auto (on inside a cluster)
    kubernetes_api_url: str | None = None  # default https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT
    kubernetes_token_file: Path = Path(_SERVICE_ACCOUNT_DIR, "token")
    kubernetes_ca_file: Path = Path(_SERVICE_ACCOUNT_DIR, "ca.crt")
    # pod labels recorded with each process (the rest are left out: labels can say more than needed)
    kubernetes_labels: list[str] = dataclasses.field(default_factory=lambda: [
        "app", "app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/component",
        "app.kubernetes.io/part-of", "app.kubernetes.io/version"])
    # Prometheus metrics on http://metrics_address:metrics_port/metrics (recorder/metrics.py).
    metrics_port: int | None = None  # None: no endpoint; 0: any free port (in the log and the ready file)
    metrics_address: str = "0.0.0.0"

    def plaintext_networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        """The server addresses whose plaintext HTTP is captured (none: any)."""
        return [ipaddress.ip_network(a, strict=False) for a in self.plaintext_addresses]


_FIELDS = {f.name: f for f in dataclasses.fields(RecorderConfig)}
_PATH_KEYS = {"segments_dir", "ready_file", "kubernetes_token_file", "kubernetes_ca_file"}
_LIST_KEYS = {"pids": int, "comms": str, "cgroups": str, "extra_libraries": str, "plaintext_ports": int,
              "plaintext_addresses": str, "kubernetes_labels": str}
_INT_KEYS = {"segment_max_bytes", "chunk_size", "max_chunks_per_call", "ringbuf_bytes", "max_library_files"}
_FLOAT_KEYS = {
    "duration", "segment_max_seconds", "flush_interval_seconds", "stats_interval_seconds",
    "rescan_interval_seconds",
}
_LOG_LEVELS = ("debug", "info", "warning", "error")
# export: the analyzer's OTLP block; upload: oisp-ship's (recorder/shipping)
SECTIONS = {"recorder", "analyzer", "export", "upload"}


def _coerce(key: str, value: Any) -> Any:
    if value is None:
        if key in ("ready_file", "duration", "segments_dir", "kubernetes_api_url", "metrics_port"):
            return None
        raise ConfigError(f"config key '{key}' must not be empty")
    if key in _PATH_KEYS:
        if not isinstance(value, (str, Path)):
            raise ConfigError(f"config key '{key}' must be a path, not {type(value).__name__}")
        return Path(value)
    if key in _LIST_KEYS:
        kind = _LIST_KEYS[key]
        if not isinstance(value, list) or not all(
            isinstance(v, kind) and not isinstance(v, bool) for v in value
        ):
            raise ConfigError(f"config key '{key}' must be a list of {kind.__name__}")
        if key == "plaintext_ports" and not all(0 < v <= 65535 for v in value):
            raise ConfigError(f"config key 'plaintext_ports' must be port numbers (1-65535), not {value!r}")
        if key == "plaintext_addresses":
            for v in value:
                try:
                    ipaddress.ip_network(v, strict=False)
                except ValueError:
                    raise ConfigError(f"config key 'plaintext_addresses': {v!r} is not an address or a "
                                      "network (10.0.0.0/8, fd00::/8, 10.1.2.3)") from None
        return list(value)
    if key in _INT_KEYS:
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ConfigError(f"config key '{key}' must be a positive integer, not {value!r}")
        return value
    if key == "metrics_port":
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 65535:
            raise ConfigError(f"config key 'metrics_port' must be a port number (0: any free port), "
                              f"not {value!r}")
        return value
    if key == "segments_max_total_bytes":  # 0 is allowed: no quota
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ConfigError(f"config key '{key}' must be a number of bytes (0: no quota), not {value!r}")
        return value
    if key in _FLOAT_KEYS:
        # .nan and .inf are YAML floats: neither is a duration or a rate
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value < math.inf:
            raise ConfigError(f"config key '{key}' must be a positive number, not {value!r}")
        return float(value)
    if key in ("discover_libraries", "scan_image_layers", "hold_new_files", "plaintext_capture"):
        if not isinstance(value, bool):
            raise ConfigError(f"config key '{key}' must be true or false")
        return value
    if key == "log_level":
        if value not in _LOG_LEVELS:
            raise ConfigError(f"config key 'log_level' must be one of {', '.join(_LOG_LEVELS)}")
        return value
    if key == "attach_mode" and value not in ATTACH_MODES:
        raise ConfigError(f"config key 'attach_mode' must be one of {', '.join(ATTACH_MODES)}")
    if key == "plaintext_hooks" and value not in PLAINTEXT_HOOKS:
        raise ConfigError(f"config key 'plaintext_hooks' must be one of {', '.join(PLAINTEXT_HOOKS)}")
    if key == "kubernetes_metadata" and value == "kubelet":
        raise ConfigError(f"config key 'kubernetes_metadata': {REMOVED_KEYS['kubelet_url']}")
    if key == "kubernetes_metadata" and value not in KUBERNETES_METADATA_MODES:
        modes = ", ".join(KUBERNETES_METADATA_MODES)
        raise ConfigError(f"config key 'kubernetes_metadata' must be one of {modes}")
    if key == "kubernetes_api_url" and not (isinstance(value, str) and value.startswith("https://")):
        raise ConfigError("config key 'kubernetes_api_url' must be an https:// URL")
    if not isinstance(value, str) or not value:
        raise ConfigError(f"config key '{key}' must be a non-empty string")
    return value


def _validate(cfg: RecorderConfig) -> None:
    if cfg.chunk_size & (cfg.chunk_size - 1) or not 256 <= cfg.chunk_size <= 65536:
        raise ConfigError("chunk_size must be a power of two between 256 and 65536")
    if cfg.max_chunks_per_call > 1024:
        raise ConfigError("max_chunks_per_call must be at most 1024")
    if not 1 <= cfg.max_library_files <= MAX_LIBRARY_FILES:
        raise ConfigError(f"max_library_files must be between 1 and {MAX_LIBRARY_FILES}")
    pages = cfg.ringbuf_bytes // 4096
    if cfg.ringbuf_bytes % 4096 or pages & (pages - 1):
        raise ConfigError("ringbuf_bytes must be a power-of-two number of 4096-byte pages")
    if cfg.ringbuf_bytes < 4 * cfg.chunk_size:
        raise ConfigError("ringbuf_bytes must hold at least four chunks")


def load_config(path: Path | None, overrides: dict[str, Any]) -> RecorderConfig:
    """Build the configuration from an optional YAML file, then flag overrides (None = not given)."""
    values: dict[str, Any] = {}
    if path is not None:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"config file {path} is not UTF-8 text") from None
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must be a mapping of keys to values")
        # The same file is shared with the analyzer (one ConfigMap): our keys live under `recorder`,
        # the analyzer's under `analyzer` and `export`, oisp-ship's under `upload`; anything else is a
        # mistake.
        if set(loaded) - SECTIONS:
            unknown = ", ".join(sorted(map(str, set(loaded) - SECTIONS)))
            raise ConfigError(f"config file {path}: unknown top-level key(s): {unknown}")
        section = loaded.get("recorder") or {}
        if not isinstance(section, dict):
            raise ConfigError(f"config file {path}: 'recorder' must be a mapping")
        for key, value in section.items():
            if key in REMOVED_KEYS:
                raise ConfigError(f"config file {path}: key 'recorder.{key}' was removed: "
                                  f"{REMOVED_KEYS[key]}")
            if key not in _FIELDS:
                raise ConfigError(f"config file {path}: unknown key 'recorder.{key}'")
            values[key] = _coerce(key, value)
    for key, value in overrides.items():
        if value is None or value == ():
            continue
        values[key] = _coerce(key, list(value) if isinstance(value, tuple) else value)
    cfg = RecorderConfig(**values)
    _validate(cfg)
    if cfg.segments_dir is None:
        raise ConfigError("no segments directory: pass --segments-dir or set recorder.segments_dir")
    return cfg
