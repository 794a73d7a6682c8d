"""What calls cost: cache reads, cache writes and reasoning tokens at their own rates (hand-computed
figures), an override file over the shipped table, and override files that cannot be used."""

from __future__ import annotations

import pytest

from analyzer.ai.calls import Usage
from analyzer.ai.pricing import Price, PricesError, bundle_table, call_cost, load_prices


def test_cached_and_reasoning_tokens_at_their_own_rates():
    price = Price(input=2e-6, output=8e-6, cache_read=0.5e-6, table="t")
    cost = call_cost(Usage(1000, 500, 1500, cached_tokens=400, reasoning_tokens=200), price)
    # 600 uncached * 2e-6 + 400 cached * 0.5e-6; 300 visible * 8e-6 + 200 reasoning * 8e-6 (no own rate)
    assert cost == {"input_cost_usd": 0.0014, "cache_read_cost_usd": 0.0002, "output_cost_usd": 0.004,
                    "reasoning_cost_usd": 0.0016, "total_cost_usd": 0.0054, "price_table": "t"}
    own = call_cost(Usage(1000, 500, cached_tokens=400, reasoning_tokens=200),
                    Price(2e-6, 8e-6, 0.5e-6, None, 1e-5))
    assert own["output_cost_usd"] == 0.0044 and own["reasoning_cost_usd"] == 0.002


def test_cache_writes_and_reasoning_counted_apart():
    # Anthropic: prompt 131 = 11 input + 100 read + 20 written
    cost = call_cost(Usage(131, 16, cached_tokens=100, cache_write_tokens=20),
                     Price(1e-6, 5e-6, 1e-7, 1.25e-6))
    assert cost["input_cost_usd"] == 0.000046 and cost["total_cost_usd"] == 0.000126
    # Gemini: thoughts are not in completion_tokens, and are billed as output
    gem = call_cost(Usage(10, 100, reasoning_tokens=50, reasoning_in_completion=False), Price(0, 1e-6))
    assert gem["output_cost_usd"] == 0.00015
    # a hostile count cannot make a cost negative
    assert call_cost(Usage(10, 5, cached_tokens=999), Price(1e-6, 1e-6))["input_cost_usd"] >= 0


def test_override_file_wins_and_falls_back_to_the_bundle(tmp_path):
    path = tmp_path / "prices.yaml"
    path.write_text("version: acme-1\nmodels:\n  openai/gpt-4o-mini: {input: 0.1, output: 0.4}\n"
                    "  vllm/*: {input: 0, output: 0}\n")
    table = load_prices(path)
    mine = table.price("openai", "gpt-4o-mini-2024-07-18")  # a dated snapshot prices like its base
    assert (mine.input, mine.output, mine.table) == (pytest.approx(1e-7), pytest.approx(4e-7), "acme-1")
    assert table.price("vllm", "any-model").input == 0
    assert table.price("openai", "gpt-4o").table == bundle_table().version


@pytest.mark.parametrize("text, message", [
    ("models: {openai/x: {input: 1}}\n", "needs a `version`"),
    ("version: v\nunit: per_token\nmodels: {openai/x: {input: 1}}\n", "unit must be one of"),
    ("version: v\nmodels: {openai/x: {input: -1}}\n", "must be a number of USD >= 0"),
    ("version: v\nmodels: {gpt-4o: {input: 1}}\n", "provider/model"),
    ("version: v\nmodels: {openai/x: {output: 1}}\n", "needs input"),
    ("version: [\n", "cannot be read"),
])
def test_unusable_override_files_are_refused_clearly(tmp_path, text, message):
    path = tmp_path / "prices.yaml"
    path.write_text(text)
    with pytest.raises(PricesError, match=message):
        load_prices(path)


def test_prices_kept_per_table_equal_the_lookup(monkeypatch):
    """PriceTable.price keeps what it looked up per (provider, model): on seeded pairs (dated snapshots,
    unknown models, non-strings, long names, a memo filled past its bound) it gives what the plain lookup
    gives, keeps no model over its size, and stays within its bound."""
    import random

    from analyzer.ai import pricing

    table = pricing.bundle_table()
    monkeypatch.setattr(table._memo, "limit", 8)  # fills and clears many times over
    table._memo.clear()
    rng = random.Random(7)
    providers = ["openai", "anthropic", "google", "nobody", None]
    models = ["gpt-4o", "gpt-4o-2024-08-06", "gpt-4o-mini-2024-07-18", "claude-3-5-sonnet-20241022",
              "x" * 300,
              "", None, 5, "unknown-model", "gemini-1.5-pro"]
    priced = 0
    for _ in range(3000):
        provider, model = rng.choice(providers), rng.choice(models)
        got = table.price(provider, model)
        assert got == table._price(provider, model), (provider, model)
        priced += got is not None
        assert len(table._memo) <= 8
        assert all(len(m) <= pricing._MEMO_CHARS for _, m in table._memo)
    assert priced > 200
