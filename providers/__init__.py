"""The provider layer: one interface to OpenAI, Claude, OpenRouter, Ollama,
llama.cpp and a deterministic mock, with classified errors, fallback chains
and shared health.

    from promptq.providers import ProviderManager, create_provider

    manager = ProviderManager()
    manager.add_provider("openai", {"default_model": "gpt-4o-mini"})
    manager.add_provider("claude", {"default_model": "claude-3-5-haiku-latest"})
    manager.setup_fallback_chain(["openai", "claude"])
    text = manager.execute_with_fallback(None, "What is AI?")

Importing this package is cheap and side-effect free: no Celery, no Redis
connection, no provider module (each is imported when first created). The
provider classes and `RedisHealthStore` are still reachable as attributes,
imported on first access.
"""

from importlib import import_module
from typing import Any

from .base import LLMProvider, ProviderResult, ProviderStream, Usage
from .error_handling import ErrorCategory, ErrorClassifier, ProviderError
from .fallback_manager import AllProvidersFailed, ChainEntry, FallbackChain, ProviderHealth, ProviderStatus
from .health import CircuitOpenError, CircuitState, HealthPolicy, HealthSnapshot, HealthStore, InMemoryHealthStore
from .manager import ProviderManager
from .registry import create_provider, known_providers, register_provider

# name -> module, for attributes imported on first access (PEP 562).
_LAZY = {
    "RedisHealthStore": ".health_redis",
    "MockProvider": ".mock_provider",
    "OpenAIProvider": ".openai_provider",
    "ClaudeProvider": ".claude_provider",
    "OpenRouterProvider": ".openrouter_provider",
    "OllamaProvider": ".ollama_provider",
    "LlamaCppProvider": ".llamacpp_provider",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AllProvidersFailed",
    "ChainEntry",
    "CircuitOpenError",
    "CircuitState",
    "ErrorCategory",
    "ErrorClassifier",
    "FallbackChain",
    "HealthPolicy",
    "HealthSnapshot",
    "HealthStore",
    "InMemoryHealthStore",
    "LLMProvider",
    "ProviderError",
    "ProviderHealth",
    "ProviderManager",
    "ProviderResult",
    "ProviderStatus",
    "ProviderStream",
    "Usage",
    "create_provider",
    "known_providers",
    "register_provider",
    *_LAZY,
]
