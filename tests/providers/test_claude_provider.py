"""ClaudeProvider against FakeAnthropic: the Messages API request and its events."""

from __future__ import annotations

import pytest

from promptq.providers.claude_provider import ClaudeProvider
from promptq.providers.error_handling import ErrorCategory, ProviderError
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.wire import sse

from .support import drain, drain_until_error


@pytest.fixture
def provider(fake_anthropic):
    p = ClaudeProvider({"api_key": fake_anthropic.api_key, "base_url": fake_anthropic.base_url})
    yield p
    p.close()


class ChattyAnthropic(FakeAnthropic):
    """Adds what a client must ignore: pings and an event type from the future."""

    def stream_between(self, ex, index):
        return [sse({"type": "ping"}, "ping"),
                sse({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "hm"}},
                    "content_block_delta"),
                sse({"type": "shiny_new_event", "data": index}, "shiny_new_event")]


def test_complete_returns_text_usage_stop_reason_and_model(provider):
    result = provider.complete("claude-sonnet-4-5", "hello there", system_prompt="be brief")
    assert result.text == "echo: hello there"
    assert (result.provider, result.model, result.finish_reason) == ("claude", "claude-sonnet-4-5", "end_turn")
    assert (result.usage.input_tokens, result.usage.output_tokens) == (4, 3)


def test_stream_takes_input_usage_from_message_start_and_output_from_message_delta(provider):
    chunks, result = drain(provider.stream("claude-sonnet-4-5", "one two three"))
    assert chunks == ["echo:", " one", " two", " three"]
    assert result.text == "echo: one two three" and result.finish_reason == "end_turn"
    # message_start said output_tokens=1; message_delta's cumulative 4 replaces it.
    assert (result.usage.input_tokens, result.usage.output_tokens) == (3, 4)
    assert result.model == "claude-sonnet-4-5"


def test_request_shape(provider, fake_anthropic):
    params = {"temperature": 0.5, "top_k": 10, "stop": ["END"], "seed": 1, "metadata": {"user_id": "u1"}}
    provider.complete("claude-sonnet-4-5", "hi", system_prompt="sys", parameters=params)
    req = fake_anthropic.requests[-1]
    assert (req.method, req.path) == ("POST", "/v1/messages")
    assert req.headers["x-api-key"] == fake_anthropic.api_key
    assert req.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in req.headers
    assert req.body == {
        "model": "claude-sonnet-4-5",
        "messages": [{"role": "user", "content": "hi"}],
        "system": "sys",  # top-level, never a message
        "max_tokens": 1024,  # required by the API; the default when none is given
        "temperature": 0.5, "top_k": 10, "stop_sequences": ["END"],
        "metadata": {"user_id": "u1"},
        "stream": False,
    }  # seed dropped: Anthropic has none


def test_max_tokens_from_parameters_and_from_config(fake_anthropic):
    p = ClaudeProvider({"api_key": fake_anthropic.api_key, "base_url": fake_anthropic.base_url, "max_tokens": 300})
    p.complete("m", "x")
    assert fake_anthropic.requests[-1].body["max_tokens"] == 300
    p.complete("m", "x", parameters={"max_tokens": 20})
    assert fake_anthropic.requests[-1].body["max_tokens"] == 20


def test_system_messages_in_a_conversation_become_the_system_field(provider, fake_anthropic):
    conversation = [
        {"role": "system", "content": "rule one"},
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": "a1"},
        {"role": "user", "content": "q2"},
    ]
    assert provider.complete("m", messages=conversation, system_prompt="rule zero").text == "echo: q2"
    body = fake_anthropic.requests[-1].body
    assert body["system"] == "rule zero\n\nrule one"
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]


def test_unsupported_roles_are_refused_before_sending(provider, fake_anthropic):
    with pytest.raises(ProviderError) as info:
        provider.complete("m", messages=[{"role": "tool", "content": "x"}, {"role": "user", "content": "y"}])
    assert info.value.category is ErrorCategory.INVALID_REQUEST
    assert fake_anthropic.requests == []


def test_pings_unknown_events_and_non_text_deltas_are_ignored():
    with ChattyAnthropic() as fake:
        p = ClaudeProvider({"api_key": fake.api_key, "base_url": fake.base_url})
        chunks, result = drain(p.stream("m", "a b"))
        assert chunks == ["echo:", " a", " b"] and result.finish_reason == "end_turn"


def test_base_url_with_v1_is_accepted(fake_anthropic):
    p = ClaudeProvider({"api_key": fake_anthropic.api_key, "base_url": fake_anthropic.base_url + "/v1/"})
    assert p.complete("m", "x").text == "echo: x"
    assert fake_anthropic.requests[-1].path == "/v1/messages"


def test_error_event_mid_stream_is_overloaded(provider):
    chunks, err = drain_until_error(provider.stream("m", "a b c [[fault:stream_error:2]]"))
    assert chunks == ["echo:", " a"]
    assert err.category is ErrorCategory.OVERLOADED and err.retryable
    assert (err.error_type, err.provider_message) == ("overloaded_error", "Overloaded")


def test_rate_limit_keeps_anthropic_error_type(provider):
    with pytest.raises(ProviderError) as info:
        provider.complete("m", "x [[fault:rate_limit:4]]")
    err = info.value
    assert err.error_type == "rate_limit_error" and err.retry_after == pytest.approx(4.0)


def test_environment_fallback_and_defaults(fake_anthropic, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", fake_anthropic.api_key)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", fake_anthropic.base_url)
    assert ClaudeProvider().complete("m", "env").text == "echo: env"
    monkeypatch.delenv("ANTHROPIC_BASE_URL")
    assert ClaudeProvider().base_url == "https://api.anthropic.com"


def test_missing_key_is_auth_error_without_a_request(fake_anthropic, monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    with pytest.raises(ProviderError) as info:
        ClaudeProvider({"base_url": fake_anthropic.base_url}).complete("m", "x")
    assert info.value.category is ErrorCategory.AUTH_ERROR and "ANTHROPIC_API_KEY" in str(info.value)
    assert fake_anthropic.requests == []
