"""Which AI provider an exchange went to: a data table (the OISP bundle's host lookups and
patterns, then endpoints.json, then the user's own endpoints), never an if-chain.

Order of evidence: a user-configured host[:port] wins; then an exact host (with or without port);
then host patterns (Azure, Bedrock, Vertex); and when the host is unknown, the path alone (an
OpenAI-shaped call to an internal gateway is still recognised, with lower confidence).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

SPEC_DIR = Path(__file__).resolve().parent.parent / "oisp_spec"
ENDPOINTS = Path(__file__).resolve().parent / "endpoints.json"
OISP_PROVIDER_NAMES = {"openai", "anthropic", "google", "azure_openai", "aws_bedrock", "cohere", "mistral",
                       "groq", "together", "fireworks", "replicate", "huggingface", "ollama", "lmstudio",
                       "vllm", "other"}


@dataclass(frozen=True)
class ProviderMatch:
    provider: str  # our provider id (the bundle's where it has one)
    oisp_name: str  # a value of the OISP provider.name enum
    api_format: str  # which parser reads the bodies: openai, anthropic, google, bedrock, cohere, ollama...
    matched_by: str  # user, host, pattern or path
    confidence: float


@cache
def _bundle() -> dict:
    return json.loads((SPEC_DIR / "bundle.json").read_text())


@cache
def _endpoints() -> dict:
    return json.loads(ENDPOINTS.read_text())


def _split(authority: str) -> tuple[str, int | None]:
    host, _, port = authority.lower().rpartition(":") if ":" in authority.split("]")[-1] else (
        authority.lower(), "", "")
    return (host, int(port)) if port.isdigit() else (authority.lower(), None)


class ProviderRegistry:
    def __init__(self, user_endpoints: dict[str, dict] | None = None):
        """user_endpoints: "host[:port]" -> {"provider": id, "api_format": fmt} from the config."""
        ours = _endpoints()
        bundle = _bundle()
        self.providers: dict[str, dict] = {}
        for pid, info in bundle["providers"].items():
            self.providers[pid] = {"oisp": pid if pid in OISP_PROVIDER_NAMES else "other",
                                   "api_format": info.get("api_format", "openai")}
        self.providers.update(ours["providers"])
        self.hosts: dict[str, str] = dict(bundle["domain_lookup"])
        self.hosts.update(ours["hosts"])
        self.patterns = [(re.compile(p["pattern"]), p["provider"])
                         for p in ours["patterns"] + bundle["domain_patterns"]]
        self.paths = [(re.compile(p["pattern"]), p["provider"], p["confidence"]) for p in ours["paths"]]
        self.user: dict[str, ProviderMatch] = {}
        for endpoint, spec in (user_endpoints or {}).items():
            pid = spec["provider"]
            fmt = spec.get("api_format") or self.providers.get(pid, {}).get("api_format", "openai")
            oisp = pid if pid in OISP_PROVIDER_NAMES else self.providers.get(pid, {}).get("oisp", "other")
            self.user[endpoint.lower()] = ProviderMatch(pid, oisp, fmt, "user", 1.0)

    def __len__(self) -> int:
        return len(self.providers)

    def _match(self, pid: str, how: str, confidence: float) -> ProviderMatch:
        info = self.providers.get(pid, {"oisp": "other", "api_format": "openai"})
        return ProviderMatch(pid, info["oisp"], info["api_format"], how, confidence)

    def match_by_body(self) -> ProviderMatch:
        """An AI-shaped request whose host and path are unknown: an OpenAI-compatible call, at best."""
        return self._match("openai_compatible", "body", 0.4)

    def classify(self, authority: str | None, path: str | None = None) -> ProviderMatch | None:
        """The provider of a call to `authority` (host[:port], as in Host or :authority) and `path`."""
        if authority:
            host, port = _split(authority.strip())
            with_port = f"{host}:{port}" if port else host
            for key in (with_port, host) if port not in (None, 443) else (host, with_port):
                if key in self.user:
                    return self.user[key]
            for key in (with_port, host) if port not in (None, 443) else (host,):
                if key in self.hosts:
                    return self._match(self.hosts[key], "host", 1.0)
            for pattern, pid in self.patterns:
                if pattern.search(host):
                    return self._match(pid, "pattern", 0.95)
        if path:
            for pattern, pid, confidence in self.paths:
                if pattern.search(path):
                    return self._match(pid, "path", confidence)
        return None


def model_price(provider: str, model: str | None) -> dict | None:
    """Per-1k-token prices of a model from the bundle: {"input": usd, "output": usd, ...} or None."""
    if not model or not isinstance(model, str):
        return None
    models = _bundle()["models"]
    entry = models.get(f"{provider}/{model}")
    if entry is None:  # dated snapshots (gpt-4o-2024-08-06) price like their family's base name
        base = re.sub(r"-\d{4}-\d{2}-\d{2}$|-\d{8}$", "", model)
        entry = models.get(f"{provider}/{base}")
    if entry is None or entry.get("input_cost_per_1k") is None:
        return None
    return {"input": entry["input_cost_per_1k"], "output": entry.get("output_cost_per_1k"),
            "cache_read": entry.get("cache_read_cost_per_1k")}
