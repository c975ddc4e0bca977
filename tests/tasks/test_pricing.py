"""Job costs: list prices from genai-prices, a config's prices over them,
nothing for local models, and None (never a guess) for an unknown model."""

from __future__ import annotations

import logging

import pytest

from promptq.tasks.pricing import NANO, PriceConfigError, Pricing, configured_prices
from promptq.tasks.settings import Settings, SettingsError


def usage(inp: int, out: int) -> dict:
    return {"input_tokens": inp, "output_tokens": out, "total_tokens": inp + out}


@pytest.mark.parametrize("provider, model", [("openai", "gpt-4o-mini"), ("claude", "claude-3-5-haiku-latest"),
                                             ("openrouter", "openai/gpt-4o")])
def test_a_hosted_model_costs_its_list_price_per_token(provider, model):
    pricing = Pricing()
    one = pricing.cost_nano(provider, model, usage(1000, 500))
    assert one and one > 0
    # Linear in tokens (none of these has tiers at this size), and output
    # tokens cost more than input tokens, as every one of these lists them.
    assert pricing.cost_nano(provider, model, usage(2000, 1000)) == 2 * one
    assert pricing.cost_nano(provider, model, usage(0, 1000)) > pricing.cost_nano(provider, model, usage(1000, 0))
    assert pricing.cost_usd(provider, model, usage(1000, 500)) == one / NANO


@pytest.mark.parametrize("provider", ["ollama", "llamacpp", "mock"])
def test_a_local_model_costs_nothing(provider):
    assert Pricing().cost_usd(provider, "llama3.2", usage(10_000, 10_000)) == 0


def test_a_call_whose_usage_was_not_reported_costs_none_not_zero():
    unknown = {"input_tokens": None, "output_tokens": None, "total_tokens": None}
    assert Pricing().cost_usd("openai", "gpt-4o-mini", unknown) is None
    assert Pricing(configured_prices({"openai": {"prices": {"*": {"input": 1, "output": 2}}}})).cost_usd(
        "openai", "gpt-4o-mini", {}) is None
    assert Pricing().cost_usd("ollama", "llama3.2", unknown) == 0


def test_an_unknown_model_costs_none_and_is_logged_once(caplog):
    pricing = Pricing()
    with caplog.at_level(logging.WARNING, logger="promptq.tasks.pricing"):
        assert pricing.cost_usd("openai", "no-such-model-xyz", usage(10, 10)) is None
        assert pricing.cost_usd("openai", "no-such-model-xyz", usage(10, 10)) is None
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "openai:no-such-model-xyz" in warnings[0]
    assert "[providers.openai.prices]" in warnings[0]


def test_configured_prices_win_over_the_list_per_model_then_for_all_models():
    prices = configured_prices({
        "openai": {"prices": {"gpt-4o-mini": {"input": 0.15, "output": 0.6}, "*": {"input": 0, "output": 0}}},
        "claude": {"api_key": "not read here"},
    })
    pricing = Pricing(prices)
    # 1000 x 0.15 + 500 x 0.60 per million tokens = 0.00045 USD, exactly.
    assert pricing.cost_nano("openai", "gpt-4o-mini", usage(1000, 500)) == 450_000
    assert pricing.cost_usd("openai", "my-vllm-model", usage(1000, 500)) == 0  # "*": a self-hosted server
    assert pricing.cost_nano("claude", "claude-3-5-haiku-latest", usage(1000, 500)) == \
        Pricing().cost_nano("claude", "claude-3-5-haiku-latest", usage(1000, 500))


@pytest.mark.parametrize("table, where", [
    ("cheap", "must be a table"),
    ({"m": {"input": 1}}, "'m' must be { input = N, output = N }"),
    ({"m": {"input": 1, "output": -2}}, "'m'.output must be a number >= 0"),
    ({"m": {"input": True, "output": 1}}, "'m'.input must be a number >= 0"),
])
def test_a_malformed_prices_table_is_refused_saying_where(table, where):
    with pytest.raises(PriceConfigError, match=r"\[providers\.openai\.prices\]") as caught:
        configured_prices({"openai": {"prices": table}})
    assert where in str(caught.value)


def test_prices_in_the_config_file_are_checked_at_load_and_kept_from_the_provider(tmp_path):
    good = tmp_path / "good.toml"
    good.write_text('[providers.openai]\nmodel = "gpt-4o-mini"\n'
                    '[providers.openai.prices]\n"gpt-4o-mini" = { input = 0.15, output = 0.6 }\n')
    settings = Settings.load(environ={}, config_path=str(good))
    assert "prices" not in settings.provider_config("openai")
    assert Pricing(configured_prices(settings.provider_configs)).cost_nano("openai", "gpt-4o-mini", usage(0, 10)) == 6_000
    bad = tmp_path / "bad.toml"
    bad.write_text('[providers.openai.prices]\n"gpt-4o-mini" = { input = "cheap", output = 0.6 }\n')
    with pytest.raises(SettingsError, match=r"\[providers\.openai\.prices\] 'gpt-4o-mini'\.input"):
        Settings.load(environ={}, config_path=str(bad))
