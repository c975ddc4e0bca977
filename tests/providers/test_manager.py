"""The registry, `create_provider` and `ProviderManager` (chains with a model per provider)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from unittest.mock import Mock

import pytest

from promptq import providers
from promptq.providers import ProviderManager, create_provider
from promptq.providers.error_handling import ErrorCategory, ProviderError
from promptq.providers.fallback_manager import AllProvidersFailed
from promptq.providers.health import InMemoryHealthStore
from promptq.providers.manager import parse_chain_item
from promptq.providers.mock_provider import MockProvider
from promptq.providers.registry import known_providers, provider_class, register_provider, unregister_provider

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "name, cls",
    [
        ("openai", "OpenAIProvider"),
        ("claude", "ClaudeProvider"),
        ("anthropic", "ClaudeProvider"),
        ("openrouter", "OpenRouterProvider"),
        ("ollama", "OllamaProvider"),
        ("llamacpp", "LlamaCppProvider"),
        ("llama.cpp", "LlamaCppProvider"),
        ("llama_cpp", "LlamaCppProvider"),
        ("Mock", "MockProvider"),
    ],
)
def test_every_builtin_name_and_alias_resolves(name, cls):
    assert provider_class(name).__name__ == cls


def test_unknown_provider_names_the_known_ones():
    with pytest.raises(ValueError) as caught:
        create_provider("gemini")
    for known in ("openai", "claude", "openrouter", "ollama", "llamacpp", "mock"):
        assert known in str(caught.value)


def test_third_party_providers_register_like_builtins():
    register_provider("echo", "promptq.providers.mock_provider:MockProvider", aliases=["parrot"])
    try:
        assert "echo" in known_providers()
        assert isinstance(create_provider("parrot", {"reply": "{prompt}!"}), MockProvider)
        assert create_provider("echo", {"reply": "{prompt}!"}).execute("m", "hi") == "hi!"
    finally:
        unregister_provider("echo")
    assert "echo" not in known_providers()
    with pytest.raises(ValueError):
        create_provider("parrot")

    register_provider("broken", "no_such_module:Thing")
    try:
        with pytest.raises(ImportError, match="no_such_module"):
            create_provider("broken")
    finally:
        unregister_provider("broken")
    with pytest.raises(ValueError):
        register_provider("bad", "not-a-dotted-path")


def test_package_exports_and_cheap_import():
    for name in ("ProviderManager", "create_provider", "ProviderError", "ErrorCategory", "FallbackChain",
                 "ProviderResult", "Usage", "LLMProvider"):
        assert hasattr(providers, name), name
    assert providers.MockProvider is MockProvider
    probe = (
        "import sys, promptq.providers\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('celery', 'kombu', 'redis')\n"
        "             or m.startswith('promptq.providers.') and m.endswith('_provider') or m == 'promptq.providers.health_redis')\n"
        "print(bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    "item, expected",
    [
        ("openai", ("openai", None)),
        ("openai:gpt-4o-mini", ("openai", "gpt-4o-mini")),
        ("ollama:llama3.2:1b", ("ollama", "llama3.2:1b")),
        (("claude", "claude-3-5-haiku-latest"), ("claude", "claude-3-5-haiku-latest")),
        (("claude", None), ("claude", None)),
    ],
)
def test_chain_items(item, expected):
    assert parse_chain_item(item) == expected


def test_guide_usage_still_works():
    manager = ProviderManager()
    manager.add_provider("mock", {})
    assert manager.execute_with_fallback("gpt-4", "What is AI?") == "mock reply to: What is AI?"
    assert "".join(manager.stream_execute_with_fallback("gpt-4", "hi")) == "mock reply to: hi"
    status = manager.get_provider_status()
    assert status["mock"]["health"] == "healthy" and status["mock"]["successes"] == 2


def test_each_provider_gets_its_own_model():
    seen = {}

    def recorder(name, fail=False):
        provider = Mock(config={})

        def execute(model, *args):
            seen[name] = model
            if fail:
                raise ProviderError("down", category=ErrorCategory.SERVER_ERROR)
            return f"{name}:{model}"

        provider.execute.side_effect = execute
        return provider

    manager = ProviderManager()
    manager.add_provider("openai", recorder("openai", fail=True))
    manager.add_provider("claude", recorder("claude", fail=True))
    manager.add_provider("ollama", recorder("ollama"))
    manager.setup_fallback_chain([("openai", "gpt-4o-mini"), "claude:claude-3-5-haiku-latest", "ollama"])
    assert manager.execute_with_fallback("llama3.2:1b", "hi") == "ollama:llama3.2:1b"
    assert seen == {"openai": "gpt-4o-mini", "claude": "claude-3-5-haiku-latest", "ollama": "llama3.2:1b"}


def test_add_provider_by_config_type_and_default_model():
    manager = ProviderManager()
    manager.add_provider("mock-a", {"type": "mock", "default_model": "a-1", "faults": ["server"]})
    manager.add_provider("mock-b", {"type": "mock", "default_model": "b-1"})
    assert manager.providers["mock-a"].instance_name == "mock-a"
    result = manager.complete_with_fallback(None, "hi")
    assert (result.provider, result.model) == ("mock-b", "b-1")
    stream = manager.stream_with_fallback(None, "hi")  # mock-a's fault was for the first call only
    assert "".join(stream) == "mock reply to: hi" and stream.result.provider == "mock-a"
    status = manager.get_provider_status()
    assert status["mock-a"]["errors_by_category"] == {"server": 1}
    assert status["mock-a"]["health"] == "degraded"


def test_implicit_chain_follows_added_providers_explicit_one_does_not():
    manager = ProviderManager()
    manager.add_provider("a", {"type": "mock", "fault": "server"})
    with pytest.raises(AllProvidersFailed):
        manager.execute_with_fallback("m", "hi")
    manager.add_provider("b", {"type": "mock", "reply": "b says {prompt}"})
    assert manager.execute_with_fallback("m", "hi") == "b says hi"

    manager.setup_fallback_chain(["a"])
    manager.add_provider("c", {"type": "mock"})
    with pytest.raises(AllProvidersFailed):
        manager.execute_with_fallback("m", "hi")


def test_chain_names_must_have_been_added():
    manager = ProviderManager()
    manager.add_provider("claude", MockProvider())
    entry = manager.setup_fallback_chain(["anthropic:m"]).entries[0]
    assert (entry.name, entry.model) == ("claude", "m")  # health is kept under the added name
    with pytest.raises(KeyError, match="openai"):
        manager.setup_fallback_chain(["openai:gpt-4o"])


def test_shared_health_store_and_remove(clock):
    store = InMemoryHealthStore(failure_threshold=1, clock=clock)
    manager = ProviderManager(health_store=store)
    manager.add_provider("a", {"type": "mock", "fault": "overloaded"})
    manager.add_provider("b", {"type": "mock"})
    manager.execute_with_fallback("m", "hi")
    assert manager.get_provider_status()["a"]["circuit"] == "open"
    assert store.snapshot("a").failures == 1
    manager.remove_provider("a")
    assert list(manager.get_provider_status()) == ["b"]


def test_real_http_providers_fail_over_with_their_own_models(fake_openai, fake_anthropic):
    manager = ProviderManager()
    manager.add_provider("openai", {"base_url": fake_openai.base_url, "api_key": "sk-test"})
    manager.add_provider("claude", {"base_url": fake_anthropic.base_url, "api_key": "sk-ant-test"})
    manager.setup_fallback_chain(["openai:gpt-4o-mini", "claude:claude-3-5-haiku-latest"])
    fake_openai.push("server")
    result = manager.complete_with_fallback(None, "hello")
    assert result.provider == "claude" and result.model.startswith("claude-3-5-haiku")
    assert [r.body["model"] for r in fake_openai.requests if r.body] == ["gpt-4o-mini"]
    assert [r.body["model"] for r in fake_anthropic.requests if r.body] == ["claude-3-5-haiku-latest"]
    status = manager.get_provider_status()
    assert status["openai"]["errors_by_category"] == {"server": 1}
    assert status["claude"]["successes"] == 1
