"""Token counts estimated with the provider's own tokenizer, for OpenAI calls whose stream reported none
(a chat completion streamed without `stream_options.include_usage`).

tiktoken does the counting with OpenAI's rank files, which the project carries (tokenizer_data/, checked
against the digests tiktoken expects): tiktoken would otherwise fetch them from the network. The prompt
is counted as OpenAI's cookbook counts chat messages (3 tokens per message, 1 per name, 3 to prime the
answer), the answer as its text and its tool calls' names and arguments. Images, tool definitions
and response formats add tokens the formula does not know of: the counts are flagged as estimated,
never mixed with reported ones (a call with any reported count keeps those alone).
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import threading
from dataclasses import dataclass
from importlib import resources

from analyzer.ai.calls import AiCall, Usage

OPENAI_PROVIDERS = ("openai", "azure_openai")
# the rank files carried, and the SHA-256 tiktoken expects of each (tiktoken_ext/openai_public.py)
ENCODINGS = {
    "o200k_base": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
    "cl100k_base": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
}
TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMING = 3

_lock = threading.Lock()
_encodings: dict[str, object] = {}


@dataclass(frozen=True)
class Estimate:
    prompt_tokens: int
    completion_tokens: int
    method: str  # "tiktoken:o200k_base"


def encoding_for(model: str | None):
    """tiktoken's encoding of an OpenAI model (None: tiktoken is not installed, the model is unknown to
    it, or its encoding is not one the project carries)."""
    if not model:
        return None
    try:
        import tiktoken
    except ImportError:
        return None
    try:
        name = tiktoken.encoding_name_for_model(model)
    except KeyError:
        return None
    if name not in ENCODINGS:
        return None
    with _lock:
        if name not in _encodings:
            _encodings[name] = _load(name)
        return _encodings[name]


def _load(name: str):
    import tiktoken
    from tiktoken_ext import openai_public

    data = gzip.decompress(resources.files("analyzer.ai").joinpath(f"tokenizer_data/{name}.tiktoken.gz")
                           .read_bytes())
    if hashlib.sha256(data).hexdigest() != ENCODINGS[name]:
        raise ValueError(f"tokenizer_data/{name}.tiktoken.gz is not the file tiktoken expects")
    ranks = {base64.b64decode(token): int(rank) for token, rank in (line.split() for line in data.splitlines()
                                                                     if line)}
    # the pattern and special tokens from tiktoken's own constructor, its loader pointed at the ranks read
    real = openai_public.load_tiktoken_bpe
    openai_public.load_tiktoken_bpe = lambda *args, **kwargs: ranks
    try:
        spec = getattr(openai_public, name)()
    finally:
        openai_public.load_tiktoken_bpe = real
    return tiktoken.Encoding(**spec)


def _count(enc, text: str | None) -> int:
    return len(enc.encode(text, disallowed_special=())) if text else 0


def estimate(call: AiCall, provider: str) -> Estimate | None:
    """Estimated counts for a call without reported ones; None when they were reported, or no tokenizer
    of the provider's can be had."""
    u = call.usage
    if provider not in OPENAI_PROVIDERS or any(v is not None for v in (
            u.prompt_tokens, u.completion_tokens, u.total_tokens, u.cached_tokens, u.reasoning_tokens)):
        return None
    enc = encoding_for(call.model_returned or call.model_requested)
    if enc is None:
        return None
    prompt = REPLY_PRIMING
    for m in call.messages:
        prompt += TOKENS_PER_MESSAGE + _count(enc, m.role) + _count(enc, m.content)
        if m.name:
            prompt += TOKENS_PER_NAME + _count(enc, m.name)
    if call.system_prompt and not any(m.role == "system" for m in call.messages):
        prompt += TOKENS_PER_MESSAGE + _count(enc, "system") + _count(enc, call.system_prompt)
    completion = _count(enc, call.output_text) + sum(_count(enc, t.name) + _count(enc, t.arguments)
                                                     for t in call.tool_calls)
    return Estimate(prompt, completion, f"tiktoken:{enc.name}")


def apply(call: AiCall, provider: str) -> str | None:
    """Put an estimate in call.usage when there is one; its method, or None."""
    e = estimate(call, provider)
    if e is None:
        return None
    call.usage = Usage(e.prompt_tokens, e.completion_tokens, e.prompt_tokens + e.completion_tokens)
    return e.method
