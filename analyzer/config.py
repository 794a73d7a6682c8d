"""Analyzer configuration: the `analyzer:` section of the same YAML file the recorder reads (one
ConfigMap for both), with `--content` on the command line overriding it.

    analyzer:
      content: full            # full | hash | none
      hash_key_file: /etc/oisp/hash.key   # secret for keyed hashes of API keys and content
      endpoints:               # your own AI endpoints: host[:port] -> provider (and API format)
        vllm.ml.svc:8000: {provider: vllm}
        llm-gateway.corp.example: {provider: openai_compatible, api_format: openai}

Unknown keys are errors, as in the recorder's section."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

KNOWN_SECTIONS = {"recorder", "analyzer"}
API_FORMATS = {"openai", "anthropic", "google", "bedrock", "cohere", "ollama", "replicate"}


class AnalyzerConfigError(ValueError):
    pass


@dataclass
class AnalyzerConfig:
    content: str = "full"
    hash_key: bytes | None = None
    endpoints: dict[str, dict] = field(default_factory=dict)


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
        else:
            raise AnalyzerConfigError(f"config file {path}: unknown key 'analyzer.{key}'")
    return cfg
