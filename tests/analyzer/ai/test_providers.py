"""Provider classification from the data tables (OISP bundle + endpoints.json + user config)."""

from __future__ import annotations

import pytest

from analyzer.ai.providers import OISP_PROVIDER_NAMES, ProviderRegistry, model_price

REG = ProviderRegistry()

CASES = [
    ("api.openai.com", "openai", "openai", "openai"),
    ("api.anthropic.com", "anthropic", "anthropic", "anthropic"),
    ("my-res.openai.azure.com", "azure_openai", "azure_openai", "openai"),
    ("generativelanguage.googleapis.com", "google", "google", "google"),
    ("us-central1-aiplatform.googleapis.com", "google_vertex", "google", "google"),
    ("europe-west4-aiplatform.googleapis.com", "google_vertex", "google", "google"),
    ("bedrock-runtime.us-east-1.amazonaws.com", "aws_bedrock", "aws_bedrock", "bedrock"),
    ("api.cohere.com", "cohere", "cohere", "cohere"),
    ("api.cohere.ai", "cohere", "cohere", "cohere"),
    ("api.mistral.ai", "mistral", "mistral", "openai"),
    ("api.groq.com", "groq", "groq", "openai"),
    ("api.together.xyz", "togetherai", "together", "openai"),
    ("api.fireworks.ai", "fireworks", "fireworks", "openai"),
    ("api.deepseek.com", "deepseek", "other", "openai"),
    ("api.x.ai", "xai", "other", "openai"),
    ("api.perplexity.ai", "perplexity", "other", "openai"),
    ("openrouter.ai", "openrouter", "other", "openai"),
    ("api.cerebras.ai", "cerebras", "other", "openai"),
    ("api.sambanova.ai", "sambanova", "other", "openai"),
    ("api.replicate.com", "replicate", "replicate", "replicate"),
    ("router.huggingface.co", "huggingface", "huggingface", "openai"),
    ("localhost:11434", "ollama", "ollama", "ollama"),
    ("127.0.0.1:1234", "lmstudio", "lmstudio", "openai"),
    ("api.openai.com:443", "openai", "openai", "openai"),
    ("API.OpenAI.com", "openai", "openai", "openai"),
]


@pytest.mark.parametrize("authority, provider, oisp, fmt", CASES)
def test_known_hosts(authority, provider, oisp, fmt):
    m = REG.classify(authority, "/v1/chat/completions")
    assert (m.provider, m.oisp_name, m.api_format) == (provider, oisp, fmt)
    assert m.oisp_name in OISP_PROVIDER_NAMES and m.confidence >= 0.95


def test_at_least_25_providers_with_hosts():
    assert len(REG) >= 25
    # every provider the issue names, vLLM and generic gateways aside (config and path rules)
    assert len({m.provider for m in (REG.classify(a) for a, *_ in CASES)}) == 21


def test_unknown_host_recognised_by_path_with_lower_confidence():
    m = REG.classify("llm-gateway.internal.example:8443", "/v1/chat/completions")
    assert m.provider == "openai_compatible" and m.matched_by == "path" and m.confidence < 0.9
    assert REG.classify("llm-gateway.internal.example", "/api/chat").provider == "ollama"
    assert REG.classify("intranet.example", "/index.html") is None
    assert REG.classify(None, None) is None


def test_user_endpoints_win():
    reg = ProviderRegistry({"vllm.ml.svc:8000": {"provider": "vllm"},
                            "gateway.corp.example": {"provider": "anthropic", "api_format": "anthropic"}})
    m = reg.classify("vllm.ml.svc:8000", "/v1/chat/completions")
    assert (m.provider, m.oisp_name, m.api_format, m.matched_by) == ("vllm", "vllm", "openai", "user")
    assert reg.classify("gateway.corp.example:443", "/anything").api_format == "anthropic"


def test_prices_from_the_bundle():
    p = model_price("openai", "gpt-4o")
    assert p["input"] == 0.0025 and p["output"] == 0.01
    assert model_price("openai", "gpt-4o-2024-08-06")["input"] > 0
    assert model_price("openai", "no-such-model") is None
