"""What a job cost in US dollars, from the tokens its provider reported.

List prices come from `genai-prices` (Pydantic's maintained table of LLM
API prices, bundled with the package, so nothing is fetched at run time;
upgrade the package for new models and price changes). It knows tiered
prices and price changes over time, which a hand-kept table here would
get wrong.

A provider's `prices` table in the config file overrides the list price,
per model or for all of its models with "*": negotiated rates, or 0 for a
self-hosted server reached through the `openai` provider.

    [providers.openai.prices]
    "gpt-4o-mini" = { input = 0.15, output = 0.60 }   # USD per million tokens
    "*" = { input = 0, output = 0 }

Local providers (ollama, llamacpp, mock) cost nothing. A model with no known
price costs `None` (unknown), never a guess; the worker logs it once.

The cost counts input and output tokens at their standard rates: cached-
input discounts and batch-API discounts are not seen here (the providers
report no cached-token split through promptq's usage), so it is an upper
estimate for jobs that hit a prompt cache.
"""

from __future__ import annotations

import logging
import threading
from decimal import Decimal
from typing import Any, Dict, Mapping, Optional, Tuple

logger = logging.getLogger(__name__)

#: Providers that run on the user's own machines: no bill per token.
LOCAL_PROVIDERS = frozenset({"ollama", "llamacpp", "mock"})
#: promptq's provider names as genai-prices knows them.
PRICE_PROVIDER_IDS = {"openai": "openai", "claude": "anthropic", "openrouter": "openrouter"}
#: Costs are summed in Redis as integer nano-dollars: exact over millions of
#: jobs, where a float sum would drift.
NANO = 1_000_000_000

PerMillion = Tuple[Decimal, Decimal]


class PriceConfigError(ValueError):
    """A `prices` table in the config file is malformed."""


def configured_prices(provider_configs: Mapping[str, Mapping[str, Any]]) -> Dict[Tuple[str, str], PerMillion]:
    """{(provider, model or "*"): (input, output) USD per million tokens} from the config file."""
    out: Dict[Tuple[str, str], PerMillion] = {}
    for provider, config in provider_configs.items():
        table = config.get("prices")
        if table is None:
            continue
        where = f"[providers.{provider}.prices]"
        if not isinstance(table, Mapping):
            raise PriceConfigError(f"{where} must be a table of model = {{ input = N, output = N }}")
        for model, price in table.items():
            if not isinstance(price, Mapping) or set(price) != {"input", "output"}:
                raise PriceConfigError(f"{where} {model!r} must be {{ input = N, output = N }} (USD per million tokens)")
            rates = []
            for side in ("input", "output"):
                value = price[side]
                if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                    raise PriceConfigError(f"{where} {model!r}.{side} must be a number >= 0, not {value!r}")
                rates.append(Decimal(str(value)))
            out[(provider, str(model))] = (rates[0], rates[1])
    return out


class Pricing:
    """Prices jobs for one worker process; safe to share between its threads."""

    def __init__(self, overrides: Optional[Dict[Tuple[str, str], PerMillion]] = None):
        self.overrides = overrides or {}
        self._unknown: set = set()
        self._lock = threading.Lock()

    def cost_usd(self, provider: str, model: str, usage: Mapping[str, Any]) -> Optional[float]:
        """USD for one call, rounded to the nano-dollar; None if no price is known."""
        nano = self.cost_nano(provider, model, usage)
        return None if nano is None else nano / NANO

    def cost_nano(self, provider: str, model: str, usage: Mapping[str, Any]) -> Optional[int]:
        rates = self.overrides.get((provider, model)) or self.overrides.get((provider, "*"))
        if rates is None and provider in LOCAL_PROVIDERS:
            return 0
        if usage.get("input_tokens") is None and usage.get("output_tokens") is None:
            return None  # the provider reported no usage: 0 would be a guess
        input_tokens = int(usage.get("input_tokens") or 0)
        output_tokens = int(usage.get("output_tokens") or 0)
        if rates is not None:
            usd = (rates[0] * input_tokens + rates[1] * output_tokens) / 1_000_000
        else:
            usd = self._list_price(provider, model, input_tokens, output_tokens)
            if usd is None:
                return None
        return int((usd * NANO).to_integral_value())

    def _list_price(self, provider: str, model: str, input_tokens: int, output_tokens: int) -> Optional[Decimal]:
        provider_id = PRICE_PROVIDER_IDS.get(provider)
        if provider_id is None or (provider, model) in self._unknown:
            return None
        # Imported on first use: it loads a table of every provider's models
        # (~0.2 s), which a worker running only local models never needs.
        from genai_prices import Usage, calc_price

        try:
            price = calc_price(Usage(input_tokens=input_tokens, output_tokens=output_tokens),
                               model_ref=model, provider_id=provider_id)
        except LookupError:
            with self._lock:
                first = (provider, model) not in self._unknown
                self._unknown.add((provider, model))
            if first:  # once per process, whichever of its threads got here first
                logger.warning("no list price known for %s:%s: its jobs' cost is not counted "
                               "(add it under [providers.%s.prices] in the config file)", provider, model, provider)
            return None
        return price.total_price
