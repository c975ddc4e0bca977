"""Every fault x every HTTP provider -> the category, retryability and wait.

Real HTTP on loopback: each provider talks to its vendor's fake server, which
answers with that vendor's own status codes, headers and error bodies. Each
fault is tried through `complete()` and through `stream()`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional

import pytest

from promptq.providers.claude_provider import ClaudeProvider
from promptq.providers.error_handling import ErrorCategory as C
from promptq.providers.error_handling import ProviderError
from promptq.providers.llamacpp_provider import LlamaCppProvider
from promptq.providers.ollama_provider import OllamaProvider
from promptq.providers.openai_provider import OpenAIProvider
from promptq.providers.openrouter_provider import OpenRouterProvider

from .support import closed_port_url, drain_until_error

PROVIDERS: Dict[str, tuple] = {
    # name: (fixture, provider class)
    "openai": ("fake_openai", OpenAIProvider),
    "claude": ("fake_anthropic", ClaudeProvider),
    "openrouter": ("fake_openrouter", OpenRouterProvider),
    "ollama": ("fake_ollama", OllamaProvider),
    "llamacpp": ("fake_llamacpp", LlamaCppProvider),
}


def make_provider(name: str, fake: Any, **extra: Any):
    cls = PROVIDERS[name][1]
    return cls({"api_key": fake.api_key, "base_url": fake.base_url, **extra})


@pytest.fixture(params=list(PROVIDERS))
def target(request):
    """(provider name, running fake server) for each HTTP provider."""
    fixture, _ = PROVIDERS[request.param]
    return request.param, request.getfixturevalue(fixture)


@dataclass(frozen=True)
class Expect:
    category: C
    retryable: bool
    status: Optional[int]
    overrides: Dict[str, tuple] = None  # provider -> (category, status)

    def for_provider(self, name: str) -> tuple:
        return (self.overrides or {}).get(name, (self.category, self.status))


HTTP_FAULTS = {
    "auth": Expect(C.AUTH_ERROR, False, 401),
    "forbidden": Expect(C.AUTH_ERROR, False, 403),
    "not_found": Expect(C.NOT_FOUND, False, 404),
    "invalid": Expect(C.INVALID_REQUEST, False, 400),
    "context_length": Expect(C.CONTEXT_LENGTH, False, 400),
    "content_filter": Expect(C.CONTENT_FILTER, False, 400, {"openrouter": (C.CONTENT_FILTER, 403)}),
    # A 429 that means "out of quota" must not be retried; one that means "slow down" must.
    "quota": Expect(C.QUOTA_EXHAUSTED, False, 429,
                    {"claude": (C.QUOTA_EXHAUSTED, 400), "openrouter": (C.QUOTA_EXHAUSTED, 402)}),
    "rate_limit:7": Expect(C.RATE_LIMIT, True, 429),
    "rate_limit_date:30": Expect(C.RATE_LIMIT, True, 429),
    "rate_limit_ms:2500": Expect(C.RATE_LIMIT, True, 429),
    "server": Expect(C.SERVER_ERROR, True, 500),
    # OpenRouter's 503 is "no provider available"; llama-server's is "Loading model".
    "overloaded": Expect(C.OVERLOADED, True, 503, {"claude": (C.OVERLOADED, 529),
                                                   "openrouter": (C.SERVER_ERROR, 503),
                                                   "llamacpp": (C.SERVER_ERROR, 503)}),
}

# Seconds the provider must ask to wait, per rate-limit fault (an HTTP-date has
# one-second resolution, so that one is a range).
RETRY_AFTER_S: Dict[str, Callable[[float], bool]] = {
    "rate_limit:7": lambda s: s == pytest.approx(7.0),
    "rate_limit_date:30": lambda s: 28.0 <= s <= 31.5,
    "rate_limit_ms:2500": lambda s: s == pytest.approx(2.5),
}

PROMPT = "one two three four five"


def call(provider, mode: str, prompt: str):
    if mode == "complete":
        return provider.complete("test-model", prompt)
    return list(provider.stream("test-model", prompt))


@pytest.mark.parametrize("mode", ["complete", "stream"])
@pytest.mark.parametrize("fault", list(HTTP_FAULTS))
def test_http_error_fault_is_classified(target, fault, mode):
    name, fake = target
    expect = HTTP_FAULTS[fault]
    provider = make_provider(name, fake)
    with pytest.raises(ProviderError) as info:
        call(provider, mode, f"{PROMPT} [[fault:{fault}]]")
    err = info.value
    category, status = expect.for_provider(name)
    assert (err.category, err.retryable, err.status_code) == (category, expect.retryable, status)
    assert err.provider == name
    # The vendor's own words survive, and show in str(err) for operators.
    assert err.provider_message and err.provider_message in str(err)
    if fault in RETRY_AFTER_S:
        assert err.retry_after is not None and RETRY_AFTER_S[fault](err.retry_after), err.retry_after
    elif not expect.retryable:
        assert err.retry_after is None


def test_faults_pushed_from_the_test_process_work_too(target):
    name, fake = target
    fake.push("rate_limit:3")
    provider = make_provider(name, fake)
    with pytest.raises(ProviderError) as info:
        provider.complete("test-model", PROMPT)
    assert info.value.category is C.RATE_LIMIT and info.value.retry_after == pytest.approx(3.0)
    # The fault was used up: the next call succeeds.
    assert provider.complete("test-model", PROMPT).text == f"echo: {PROMPT}"


# --- body faults: the failure comes after the 200 ------------------------------

IN_BAND = {  # stream_error inside a 200 stream
    "openai": C.SERVER_ERROR, "claude": C.OVERLOADED, "openrouter": C.SERVER_ERROR,
    "ollama": C.SERVER_ERROR, "llamacpp": C.SERVER_ERROR,
}


def test_stream_error_mid_stream_raises_after_chunks_were_yielded(target):
    name, fake = target
    chunks, err = drain_until_error(make_provider(name, fake).stream("m", f"{PROMPT} [[fault:stream_error:2]]"))
    assert "".join(chunks) == "echo: one"  # two pieces went out before the error
    assert err.category is IN_BAND[name] and err.retryable is True
    assert err.provider == name and err.provider_message


def test_stream_error_on_a_non_streamed_call_is_classified(target):
    # Non-streamed, the same failure comes as the HTTP error it stands for
    # (OpenRouter: a 200 whose choice carries the error).
    name, fake = target
    with pytest.raises(ProviderError) as info:
        make_provider(name, fake).complete("m", f"{PROMPT} [[fault:stream_error]]")
    assert info.value.category is IN_BAND[name] and info.value.retryable is True


def test_drop_mid_stream_is_retryable_network_error(target):
    name, fake = target
    chunks, err = drain_until_error(make_provider(name, fake).stream("m", f"{PROMPT} [[fault:drop:3]]"))
    assert "".join(chunks) == "echo: one two"
    assert err.category is C.NETWORK_ERROR and err.retryable is True


def test_drop_of_a_non_streamed_body_is_retryable_network_error(target):
    name, fake = target
    with pytest.raises(ProviderError) as info:
        make_provider(name, fake).complete("m", f"{PROMPT} [[fault:drop]]")
    assert info.value.category is C.NETWORK_ERROR and info.value.retryable is True


@pytest.mark.parametrize("mode", ["complete", "stream"])
def test_malformed_body_is_malformed_response_not_retryable(target, mode):
    name, fake = target
    with pytest.raises(ProviderError) as info:
        call(make_provider(name, fake), mode, f"{PROMPT} [[fault:malformed:2]]")
    assert info.value.category is C.MALFORMED_RESPONSE and info.value.retryable is False


@pytest.mark.parametrize("mode", ["complete", "stream"])
def test_hang_with_a_short_read_timeout_is_network_error(target, mode):
    name, fake = target
    provider = make_provider(name, fake, timeout=0.3)
    with pytest.raises(ProviderError) as info:
        call(provider, mode, f"{PROMPT} [[fault:hang]]")
    assert info.value.category is C.NETWORK_ERROR and info.value.retryable is True
    assert len(fake.requests) == 1  # one request, not silently retried by the transport


def test_a_stall_between_stream_chunks_hits_the_read_timeout(target):
    name, fake = target
    provider = make_provider(name, fake, timeout=0.3)
    chunks, err = drain_until_error(provider.stream("m", f"{PROMPT} [[fault:slow_stream:5]]"))
    assert chunks and err.category is C.NETWORK_ERROR and err.retryable is True


def test_slow_but_within_the_timeout_succeeds(target):
    name, fake = target
    provider = make_provider(name, fake, timeout=5)
    assert provider.complete("m", f"{PROMPT} [[fault:slow:0.2]]").text == f"echo: {PROMPT}"


@pytest.mark.parametrize("mode", ["complete", "stream"])
@pytest.mark.parametrize("name", list(PROVIDERS))
def test_connection_refused_is_retryable_network_error(name, mode):
    provider = PROVIDERS[name][1]({"api_key": "k-123456", "base_url": closed_port_url("/v1"), "connect_timeout": 2})
    with pytest.raises(ProviderError) as info:
        call(provider, mode, PROMPT)
    err = info.value
    assert (err.category, err.retryable, err.status_code, err.provider) == (C.NETWORK_ERROR, True, None, name)


# --- the vendor's code/type decides, not words in the message (issue 8, fix 6) ----

BILLING_WORDED_429 = {
    "error": {
        "message": "Rate limit reached for gpt-4o-mini in organization org-x on requests per min (RPM): "
                   "Limit 3, Used 3, Requested 1. Please try again in 20s. Visit "
                   "https://platform.openai.com/account/rate-limits to learn more. You can increase your rate "
                   "limit by adding a payment method to your account at https://platform.openai.com/account/billing.",
        "type": "requests",
        "param": None,
        "code": "rate_limit_exceeded",
    }
}


def test_rate_limit_code_wins_over_billing_words_in_the_message():
    from promptq.providers.error_handling import error_from_payload

    err = error_from_payload(BILLING_WORDED_429, "openai", status_code=429, headers={"retry-after": "20"})
    assert err.category is C.RATE_LIMIT and err.retryable is True
    assert err.retry_after == pytest.approx(20.0)
    # A true quota error, worded alike, stays a quota error: its code says so.
    quota = {"error": {"message": "You exceeded your current quota, please check your plan and billing details.",
                       "type": "insufficient_quota", "code": "insufficient_quota"}}
    assert error_from_payload(quota, "openai", status_code=429).category is C.QUOTA_EXHAUSTED
