"""What an AI call cost: a versioned price table (the OISP bundle shipped in analyzer/oisp_spec, under
an optional override file of one's own prices) and the arithmetic over a call's token counts.

Token counts, as the format parsers normalise them (analyzer/ai/calls.py Usage): prompt tokens include
the ones read from the cache (cached_tokens) and written to it (cache_write_tokens); completion tokens
include the reasoning ones, except where the provider counts them apart (Gemini's thoughts:
Usage.reasoning_in_completion False). Each kind is priced at its own rate when the table has one, else
at the input (cache reads and writes) or output (reasoning) rate, which is what providers without a
separate rate bill.

The override file (analyzer.prices_file in the config, docs/analyzer.md):

    version: acme-2026-11            # required: written into every event priced from this file
    unit: per_million_tokens         # or per_1k_tokens (the bundle's unit); default per_million_tokens
    models:
      openai/gpt-4o-mini: {input: 0.15, output: 0.60, cache_read: 0.075}
      vllm/*: {input: 0, output: 0}  # every model of a provider
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import yaml

from analyzer.ai.calls import Usage
from analyzer.bounded_dict import BoundedDict

BUNDLE = Path(__file__).resolve().parent.parent / "oisp_spec" / "bundle.json"
RATES = ("input", "output", "cache_read", "cache_write", "reasoning")
UNITS = {"per_million_tokens": 1e-6, "per_1k_tokens": 1e-3}
_DATED = re.compile(r"-\d{4}-\d{2}-\d{2}$|-\d{8}$")


class PricesError(ValueError):
    """The override file cannot be used: its path and what is wrong, in one line."""


@dataclass(frozen=True)
class Price:
    """USD per token of each kind (None: the table has no separate rate for it)."""

    input: float
    output: float | None = None
    cache_read: float | None = None
    cache_write: float | None = None
    reasoning: float | None = None
    table: str = ""  # the version of the table the price came from


# prices looked up, kept per table: (provider, model) pairs repeat from call to call; up to _MEMO_SIZE of
# them, for models named in up to _MEMO_CHARS characters (then forgotten all at once: a bound, not a policy)
_MEMO_SIZE = 4096
_MEMO_CHARS = 256


@dataclass(frozen=True)
class PriceTable:
    version: str  # what events say they were priced with (usage.price_table)
    prices: dict[str, Price]  # "provider/model" (or "provider/*") -> price
    fallback: PriceTable | None = None  # consulted for what this table does not price
    _memo: BoundedDict = field(default_factory=lambda: BoundedDict(_MEMO_SIZE), repr=False, compare=False)

    def price(self, provider: str, model: str | None) -> Price | None:
        """The price of provider/model: exact, then a dated snapshot's base name (gpt-4o-2024-08-06
        prices like gpt-4o), then the provider's `*`; then the fallback table's."""
        if type(model) is not str or type(provider) is not str or len(model) > _MEMO_CHARS:
            return self._price(provider, model)
        key = (provider, model)
        found = self._memo.get(key, self._memo)
        if found is self._memo:
            found = self._memo.keep(key, self._price(provider, model))
        return found

    def _price(self, provider: str, model: str | None) -> Price | None:
        if isinstance(model, str) and model:
            base = _DATED.sub("", model)
            for key in (f"{provider}/{model}", f"{provider}/{base}", f"{provider}/*"):
                if key in self.prices:
                    return self.prices[key]
        return self.fallback.price(provider, model) if self.fallback else None


@cache
def bundle_table() -> PriceTable:
    """The prices shipped with the project (the OISP bundle, per 1k tokens)."""
    bundle = json.loads(BUNDLE.read_text())
    version = f"oisp-bundle-{bundle.get('bundle_version', '?')}@{str(bundle.get('generated_at', '?'))[:10]}"
    prices = {}
    for key, entry in bundle["models"].items():
        if isinstance(entry.get("input_cost_per_1k"), (int, float)):
            prices[key] = Price(*(_per_token(entry.get(f"{rate}_cost_per_1k"), 1e-3) for rate in RATES),
                                table=version)
    return PriceTable(version, prices)


def _per_token(value: object, unit: float) -> float | None:
    return value * unit if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def load_prices(path: Path | None) -> PriceTable:
    """The bundle's table, under the override file's when one is given (PricesError if unusable)."""
    if path is None:
        return bundle_table()
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise PricesError(f"prices file {path}: cannot be read: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("models"), dict):
        raise PricesError(f"prices file {path}: needs a `models` mapping of provider/model to prices")
    version = doc.get("version")
    if not isinstance(version, (str, int, float)) or isinstance(version, bool) or not str(version).strip():
        raise PricesError(f"prices file {path}: needs a `version` (it is written into every event it prices)")
    unit = doc.get("unit", "per_million_tokens")
    if unit not in UNITS:
        raise PricesError(f"prices file {path}: unit must be one of {', '.join(UNITS)}, not {unit!r}")
    unknown = sorted(map(str, set(doc) - {"version", "unit", "models"}))
    if unknown:
        raise PricesError(f"prices file {path}: unknown key(s) {', '.join(unknown)}")
    version = str(version)
    prices = {}
    for key, rates in doc["models"].items():
        where = f"prices file {path}: models.{key}"
        if not isinstance(key, str) or key.count("/") < 1 or key.startswith("/") or key.endswith("/"):
            raise PricesError(f"{where}: the key must be provider/model (or provider/*)")
        if not isinstance(rates, dict) or set(rates) - set(RATES) or "input" not in rates:
            raise PricesError(f"{where}: needs input (and optionally {', '.join(RATES[1:])}), in USD {unit}")
        for rate, value in rates.items():
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) \
                    or value < 0:
                raise PricesError(f"{where}.{rate}: must be a number of USD >= 0, not {value!r}")
        prices[key] = Price(*(_per_token(rates.get(rate), UNITS[unit]) for rate in RATES), table=version)
    return PriceTable(version, prices, fallback=bundle_table())


def call_cost(usage: Usage, price: Price) -> dict:
    """The cost fields of an event's usage, in USD: input (uncached, cache reads, cache writes) and
    output (visible and reasoning) sides, their parts where a separate rate applied, and the table."""
    prompt, completion = usage.prompt_tokens, usage.completion_tokens
    out: dict = {}
    if prompt is None:
        return out
    read = min(usage.cached_tokens or 0, prompt)
    write = min(usage.cache_write_tokens or 0, prompt - read)
    cache_read = read * (price.cache_read if price.cache_read is not None else price.input)
    cache_write = write * (price.cache_write if price.cache_write is not None else price.input)
    input_cost = (prompt - read - write) * price.input + cache_read + cache_write
    out["input_cost_usd"] = _usd(input_cost)
    if read:
        out["cache_read_cost_usd"] = _usd(cache_read)
    if write:
        out["cache_write_cost_usd"] = _usd(cache_write)
    if completion is not None and price.output is not None:
        reasoning = usage.reasoning_tokens or 0
        if usage.reasoning_in_completion:
            reasoning = min(reasoning, completion)
            visible = completion - reasoning
        else:
            visible = completion
        reasoning_cost = reasoning * (price.reasoning if price.reasoning is not None else price.output)
        output_cost = visible * price.output + reasoning_cost
        out["output_cost_usd"] = _usd(output_cost)
        if reasoning:
            out["reasoning_cost_usd"] = _usd(reasoning_cost)
        out["total_cost_usd"] = _usd(out["input_cost_usd"] + out["output_cost_usd"])
    out["price_table"] = price.table
    return out


def _usd(value: float) -> float:
    return round(value, 8)
