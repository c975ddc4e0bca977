"""`ProviderManager`: named providers, one fallback chain, one health store.

The seed guide's API, kept::

    manager = ProviderManager()
    manager.add_provider("openai", {"api_key": ...})
    manager.add_provider("claude", {"default_model": "claude-3-5-haiku-latest"})
    manager.execute_with_fallback("gpt-4", "What is AI?")

and extended so a chain names a model per provider (the seed sent "gpt-4"
to Claude too)::

    manager.setup_fallback_chain([("openai", "gpt-4o-mini"), "claude:claude-3-5-haiku-latest", "ollama"])

A chain item is a provider name, `"name:model"` (split at the first colon,
so Ollama tags survive: `"ollama:llama3.2:1b"`) or `(name, model)`. A bare
name is asked for the model given to the call, else its config's
`default_model`. A name not added to the manager is an error, not a silent
skip. Without `setup_fallback_chain`, the chain is every provider in the
order added, and is rebuilt when another is added.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

from .base import LLMProvider, ProviderResult, ProviderStream
from .fallback_manager import ChainEntry, FallbackChain
from .health import HealthStore, InMemoryHealthStore
from .registry import create_provider, resolve_name

ChainItem = Union[str, Tuple[str, Optional[str]]]


def parse_chain_item(item: ChainItem) -> Tuple[str, Optional[str]]:
    """`"name"`, `"name:model"` or `(name, model)` as (name, model or None)."""
    if isinstance(item, tuple) and len(item) == 2:
        name, model = item
    elif isinstance(item, str):
        name, _, model = item.partition(":")
    else:
        raise TypeError(f"a chain item is 'name', 'name:model' or (name, model), not {item!r}")
    name, model = str(name).strip(), (model or "").strip() or None
    if not name:
        raise ValueError(f"chain item {item!r} names no provider")
    return name, model


class ProviderManager:
    """Manages multiple providers and the fallback chain through them."""

    def __init__(
        self,
        *,
        health_store: Optional[HealthStore] = None,
        max_retries: int = 0,
        try_when_all_open: bool = False,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.providers: Dict[str, LLMProvider] = {}
        self.health_store = health_store or InMemoryHealthStore()
        self._chain_options = {"max_retries": max_retries, "try_when_all_open": try_when_all_open, "sleep": sleep}
        self._fallback_chain: Optional[FallbackChain] = None
        self._explicit_order = False

    # --- providers --------------------------------------------------------------

    def add_provider(self, name: str, config: Union[Dict[str, Any], LLMProvider, None] = None) -> LLMProvider:
        """Add a provider under `name`, from a config dict or as an instance.

        A config may say `"type": "mock"` to build another class than the name
        suggests (two mocks, two OpenAI-compatible servers); such a provider
        reports itself under `name` where it supports `instance_name`.
        """
        if isinstance(config, dict) or config is None:
            config = dict(config or {})
            kind = config.pop("type", None) or name
            if kind != name:
                config.setdefault("instance_name", name)
            provider = create_provider(kind, config)
        else:
            provider = config
        self.providers[name] = provider
        if not self._explicit_order:
            self._fallback_chain = None  # the implicit chain grows with the providers
        return provider

    def _added_name(self, name: str) -> str:
        """The name `name` was added under, matching aliases ("anthropic" = "claude")."""
        if name in self.providers:
            return name
        canonical = resolve_name(name)
        for added in self.providers:
            if resolve_name(added) == canonical:
                return added
        raise KeyError(f"no provider {name!r} added; added: {', '.join(self.providers) or 'none'}")

    def get_provider(self, name: str) -> LLMProvider:
        return self.providers[self._added_name(name)]

    def remove_provider(self, name: str) -> None:
        provider = self.providers.pop(name)
        provider.close()
        self._fallback_chain, self._explicit_order = None, False

    # --- the chain ----------------------------------------------------------------

    def setup_fallback_chain(self, provider_order: Optional[Sequence[ChainItem]] = None) -> FallbackChain:
        """Build the chain: names, `"name:model"` or `(name, model)`, in order."""
        self._explicit_order = bool(provider_order)
        items = provider_order or list(self.providers)
        entries: List[ChainEntry] = []
        for item in items:
            name, model = parse_chain_item(item)
            if isinstance(item, str) and item in self.providers:
                name, model = item, None  # added under a name with a colon in it
            # Health is kept under the added name, so status and chain agree.
            name = self._added_name(name)
            entries.append(ChainEntry(name, self.providers[name], model))
        self._fallback_chain = FallbackChain(entries, health_store=self.health_store, **self._chain_options)
        return self._fallback_chain

    @property
    def fallback_chain(self) -> FallbackChain:
        if self._fallback_chain is None:
            self.setup_fallback_chain()
        assert self._fallback_chain is not None
        return self._fallback_chain

    def execute_with_fallback(
        self,
        model: Optional[str],
        prompt: str,
        system_prompt: Optional[str] = None,
        parameters: Optional[Dict[str, Any]] = None,
    ) -> str:
        """The first answer along the chain, as text (raises `AllProvidersFailed`)."""
        return self.fallback_chain.execute(model, prompt, system_prompt, parameters)

    def complete_with_fallback(
        self,
        model: Optional[str],
        prompt: Optional[str] = None,
        system_prompt: Optional[str] = None,
        parameters: Optional[Dict[str, Any]] = None,
        *,
        messages: Optional[List[Dict[str, Any]]] = None,
    ) -> ProviderResult:
        """Like `execute_with_fallback`, returning who answered and the usage."""
        return self.fallback_chain.complete(model, prompt, system_prompt, parameters, messages=messages)

    def stream_execute_with_fallback(
        self,
        model: Optional[str],
        prompt: str,
        system_prompt: Optional[str] = None,
        parameters: Optional[Dict[str, Any]] = None,
    ) -> Iterator[str]:
        """Stream with fallback; falls back only before the first chunk."""
        yield from self.fallback_chain.stream_execute(model, prompt, system_prompt, parameters)

    def stream_with_fallback(
        self,
        model: Optional[str],
        prompt: Optional[str] = None,
        system_prompt: Optional[str] = None,
        parameters: Optional[Dict[str, Any]] = None,
        *,
        messages: Optional[List[Dict[str, Any]]] = None,
    ) -> ProviderStream:
        return self.fallback_chain.stream(model, prompt, system_prompt, parameters, messages=messages)

    # --- health -------------------------------------------------------------------

    def get_provider_status(self) -> Dict[str, Dict[str, Any]]:
        """Health of every added provider: `health`, `errors`, `successes`, `circuit`, ..."""
        return {name: self.health_store.snapshot(name).to_dict() for name in self.providers}

    def close(self) -> None:
        for provider in self.providers.values():
            provider.close()


__all__ = ["ProviderManager", "parse_chain_item"]
