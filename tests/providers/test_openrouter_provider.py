"""OpenRouterProvider against FakeOpenRouter: comments, in-band errors, attribution."""

from __future__ import annotations

import pytest

from promptq.providers.error_handling import ErrorCategory, ProviderError
from promptq.providers.openrouter_provider import OpenRouterProvider
from tests.fakes.openrouter_server import FakeOpenRouter

from .support import drain, drain_until_error


@pytest.fixture
def provider(fake_openrouter):
    p = OpenRouterProvider({"api_key": fake_openrouter.api_key, "base_url": fake_openrouter.base_url})
    yield p
    p.close()


def test_complete(provider):
    result = provider.complete("openai/gpt-4o-mini", "hello there")
    assert result.text == "echo: hello there"
    assert (result.provider, result.model, result.finish_reason) == ("openrouter", "openai/gpt-4o-mini", "stop")
    assert (result.usage.input_tokens, result.usage.output_tokens) == (2, 3)


def test_stream_through_processing_comments():
    # A keep-alive comment before every content chunk, and two before the first.
    with FakeOpenRouter(processing_every=1) as fake:
        p = OpenRouterProvider({"api_key": fake.api_key, "base_url": fake.base_url})
        chunks, result = drain(p.stream("anthropic/claude-sonnet-4", "one two three"))
    assert chunks == ["echo:", " one", " two", " three"]
    assert (result.usage.input_tokens, result.usage.output_tokens) == (3, 4)
    assert result.model == "anthropic/claude-sonnet-4" and result.finish_reason == "stop"


def test_request_shape_and_attribution_headers(fake_openrouter):
    p = OpenRouterProvider({"api_key": fake_openrouter.api_key, "base_url": fake_openrouter.base_url,
                            "http_referer": "https://promptq.example", "app_title": "promptq"})
    p.complete("meta-llama/llama-3.1-8b-instruct", "hi", parameters={"max_tokens": 9, "top_k": 4,
                                                                     "provider": {"sort": "price"}})
    req = fake_openrouter.requests[-1]
    assert (req.method, req.path) == ("POST", "/api/v1/chat/completions")
    assert req.headers["authorization"] == f"Bearer {fake_openrouter.api_key}"
    assert req.headers["http-referer"] == "https://promptq.example"
    assert req.headers["x-title"] == req.headers["x-openrouter-title"] == "promptq"
    body = req.body
    # OpenRouter reads max_tokens (not max_completion_tokens) and supports top_k
    # and its own routing extras.
    assert (body["max_tokens"], body["top_k"], body["provider"]) == (9, 4, {"sort": "price"})
    assert "max_completion_tokens" not in body


def test_no_attribution_headers_unless_configured(provider, fake_openrouter):
    provider.complete("m", "x")
    headers = fake_openrouter.requests[-1].headers
    assert "http-referer" not in headers and "x-title" not in headers


def test_error_chunk_after_text_is_raised_not_swallowed(provider):
    chunks, err = drain_until_error(provider.stream("m", "a b c [[fault:stream_error:2]]"))
    assert chunks == ["echo:", " a"]
    assert err.category is ErrorCategory.SERVER_ERROR and err.retryable
    assert err.provider_message == "Provider disconnected unexpectedly"


def test_error_inside_a_200_completion_is_raised(provider):
    with pytest.raises(ProviderError) as info:
        provider.complete("m", "x [[fault:stream_error]]")
    err = info.value
    # The choice's error.code is the status OpenRouter stands for: 502, upstream down.
    assert (err.category, err.status_code, err.retryable) == (ErrorCategory.SERVER_ERROR, 502, True)
    assert err.provider_message == "Provider returned error"


def test_out_of_credits_is_quota_not_retryable(provider):
    with pytest.raises(ProviderError) as info:
        provider.complete("m", "x [[fault:quota]]")
    assert (info.value.category, info.value.status_code, info.value.retryable) == (
        ErrorCategory.QUOTA_EXHAUSTED, 402, False)


def test_moderation_is_content_filter(provider):
    with pytest.raises(ProviderError) as info:
        list(provider.stream("m", "x [[fault:content_filter]]"))
    assert info.value.category is ErrorCategory.CONTENT_FILTER and "flagged" in info.value.provider_message


def test_environment_fallback_and_defaults(fake_openrouter, monkeypatch):
    monkeypatch.setenv("OPENROUTER_API_KEY", fake_openrouter.api_key)
    monkeypatch.setenv("OPENROUTER_BASE_URL", fake_openrouter.base_url)
    assert OpenRouterProvider().complete("m", "env").text == "echo: env"
    monkeypatch.delenv("OPENROUTER_BASE_URL")
    assert OpenRouterProvider().base_url == "https://openrouter.ai/api/v1"
