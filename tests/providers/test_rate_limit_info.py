"""Rate-limit headers: read from every vendor's format, and surfaced by the
provider layer on results and errors (real HTTP to the fake servers)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from promptq.providers.claude_provider import ClaudeProvider
from promptq.providers.error_handling import ErrorCategory, ProviderError
from promptq.providers.openai_provider import OpenAIProvider
from promptq.providers.rate_limit_info import parse_rate_limit_info

NOW = 1_800_000_000.0


def test_openai_durations():
    info = parse_rate_limit_info({
        "x-ratelimit-limit-requests": "600", "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "6m0s", "x-ratelimit-limit-tokens": "200000",
        "x-ratelimit-remaining-tokens": "1500", "x-ratelimit-reset-tokens": "20ms",
        "retry-after-ms": "1500",
    }, now=NOW)
    assert (info.limit_requests, info.remaining_requests, info.reset_requests_s) == (600, 0, 360)
    assert (info.limit_tokens, info.remaining_tokens) == (200000, 1500)
    assert info.reset_tokens_s == pytest.approx(0.02)
    assert info.retry_after_s == pytest.approx(1.5)


def test_anthropic_rfc3339_resets():
    reset = datetime.fromtimestamp(NOW + 12, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    info = parse_rate_limit_info({
        "anthropic-ratelimit-requests-limit": "50", "anthropic-ratelimit-requests-remaining": "3",
        "anthropic-ratelimit-requests-reset": reset, "anthropic-ratelimit-tokens-limit": "100000",
        "anthropic-ratelimit-tokens-remaining": "90000", "anthropic-ratelimit-tokens-reset": reset,
    }, now=NOW)
    assert (info.limit_requests, info.remaining_requests) == (50, 3)
    assert info.reset_requests_s == pytest.approx(12) and info.limit_tokens == 100000
    assert info.retry_after_s is None


def test_nothing_said_is_empty_and_garbage_is_ignored():
    assert parse_rate_limit_info({}).empty
    assert parse_rate_limit_info({"x-ratelimit-limit-requests": "lots"}).empty


def test_openai_result_and_429_carry_the_headers(fake_openai):
    provider = OpenAIProvider({"api_key": fake_openai.api_key, "base_url": fake_openai.base_url})
    result = provider.complete("gpt-4o-mini", "hi")
    assert parse_rate_limit_info(result.rate_limit_headers).limit_requests == 500
    assert "rate_limit_headers" not in result.to_dict()  # not part of a job's result
    fake_openai.push("rate_limit:2")
    with pytest.raises(ProviderError) as info:
        provider.complete("gpt-4o-mini", "hi")
    assert info.value.category is ErrorCategory.RATE_LIMIT
    parsed = parse_rate_limit_info(info.value.rate_limit_headers)
    assert parsed.remaining_requests == 0 and parsed.retry_after_s == pytest.approx(2)
    stream = provider.stream("gpt-4o-mini", "hi there")
    assert "".join(stream)
    assert parse_rate_limit_info(stream.result.rate_limit_headers).remaining_requests == 499


def test_anthropic_result_carries_the_headers(fake_anthropic):
    provider = ClaudeProvider({"api_key": fake_anthropic.api_key, "base_url": fake_anthropic.base_url})
    result = provider.complete("claude-3-5-haiku-latest", "hi")
    info = parse_rate_limit_info(result.rate_limit_headers)
    assert info.limit_requests == 50 and info.remaining_requests == 49
    assert 0 <= info.reset_requests_s <= 2
