"""OpenAIProvider against FakeOpenAI: results, streams and the request on the wire."""

from __future__ import annotations

import logging

import pytest

from promptq.providers.error_handling import ErrorCategory, ProviderError
from promptq.providers.openai_provider import OpenAIProvider
from tests.fakes.openai_server import FakeOpenAI

from .support import drain, drain_until_error


@pytest.fixture
def provider(fake_openai):
    p = OpenAIProvider({"api_key": fake_openai.api_key, "base_url": fake_openai.base_url})
    yield p
    p.close()


class DatedModelOpenAI(FakeOpenAI):
    """Answers as the dated snapshot an alias resolves to, as api.openai.com does."""

    def envelope(self, ex, obj):
        body = super().envelope(ex, obj)
        body["model"] = ex.model + "-2024-07-18"
        return body


def test_complete_returns_text_usage_finish_reason_and_model(provider):
    result = provider.complete("gpt-4o-mini", "hello there", system_prompt="be brief")
    assert result.text == "echo: hello there"
    assert result.provider == "openai" and result.model == "gpt-4o-mini"
    assert result.finish_reason == "stop"
    # The fake counts words: "be brief" + "hello there" in, "echo: hello there" out.
    assert (result.usage.input_tokens, result.usage.output_tokens, result.usage.total_tokens) == (4, 3, 7)
    assert result.latency_s > 0


def test_stream_yields_pieces_and_returns_the_result_with_usage(provider):
    chunks, result = drain(provider.stream("gpt-4o-mini", "one two three"))
    assert chunks == ["echo:", " one", " two", " three"]
    assert result.text == "echo: one two three"
    assert result.finish_reason == "stop"
    assert (result.usage.input_tokens, result.usage.output_tokens) == (3, 4)


def test_the_model_reported_is_the_one_that_answered():
    with DatedModelOpenAI() as fake:
        p = OpenAIProvider({"api_key": fake.api_key, "base_url": fake.base_url})
        assert p.complete("gpt-4o-mini", "x").model == "gpt-4o-mini-2024-07-18"
        _, result = drain(p.stream("gpt-4o-mini", "x"))
        assert result.model == "gpt-4o-mini-2024-07-18"


def test_request_shape_non_streamed(provider, fake_openai):
    params = {"temperature": 0.3, "top_p": 0.8, "max_tokens": 50, "stop": "\n\n", "seed": 42, "top_k": 5,
              "presence_penalty": 0.1}
    provider.complete("gpt-4o-mini", "hi", system_prompt="sys", parameters=params)
    req = fake_openai.requests[-1]
    assert (req.method, req.path) == ("POST", "/v1/chat/completions")
    assert req.headers["authorization"] == f"Bearer {fake_openai.api_key}"
    assert req.headers["content-type"] == "application/json"
    assert req.body == {
        "model": "gpt-4o-mini",
        "messages": [{"role": "system", "content": "sys"}, {"role": "user", "content": "hi"}],
        "temperature": 0.3, "top_p": 0.8, "max_completion_tokens": 50, "stop": ["\n\n"], "seed": 42,
        "presence_penalty": 0.1,
        "stream": False,
    }  # top_k dropped: OpenAI has none


def test_request_shape_streamed_asks_for_usage(provider, fake_openai):
    drain(provider.stream("gpt-4o-mini", "hi"))
    body = fake_openai.requests[-1].body
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}


def test_explicit_messages_are_sent_as_given(provider, fake_openai):
    conversation = [
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "reply"},
        {"role": "user", "content": "second"},
    ]
    result = provider.complete("gpt-4o-mini", messages=conversation, system_prompt="sys")
    assert result.text == "echo: second"
    assert fake_openai.requests[-1].body["messages"] == [{"role": "system", "content": "sys"}, *conversation]


def test_seed_api_execute_and_stream_execute(provider):
    assert provider.execute("gpt-4o-mini", "a b") == "echo: a b"
    assert "".join(provider.stream_execute("gpt-4o-mini", "a b")) == "echo: a b"


def test_missing_key_fails_before_any_request(fake_openai, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    p = OpenAIProvider({"base_url": fake_openai.base_url})
    for call in (lambda: p.complete("m", "x"), lambda: p.stream("m", "x")):
        with pytest.raises(ProviderError) as info:
            call()
        assert info.value.category is ErrorCategory.AUTH_ERROR and not info.value.retryable
        assert "OPENAI_API_KEY" in str(info.value)
    assert fake_openai.requests == []


def test_bad_parameters_fail_before_any_request(provider, fake_openai):
    with pytest.raises(ProviderError) as info:
        provider.stream("m", "x", parameters={"temperature": "warm"})
    assert info.value.category is ErrorCategory.INVALID_REQUEST and "'temperature'" in str(info.value)
    assert fake_openai.requests == []


def test_key_and_base_url_come_from_the_environment(fake_openai, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", fake_openai.api_key)
    monkeypatch.setenv("OPENAI_BASE_URL", fake_openai.base_url)
    assert OpenAIProvider().complete("m", "env").text == "echo: env"


def test_config_wins_over_the_environment(fake_openai, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env-wrong")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    p = OpenAIProvider({"api_key": fake_openai.api_key, "base_url": fake_openai.base_url})
    assert p.complete("m", "cfg").text == "echo: cfg"


def test_defaults_point_at_api_openai_com(monkeypatch):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    p = OpenAIProvider({"api_key": "sk-x"})
    assert p.base_url == "https://api.openai.com/v1"
    assert (p.name, p.key_env_var, p.needs_key) == ("openai", "OPENAI_API_KEY", True)


def test_organization_and_project_headers(fake_openai):
    p = OpenAIProvider({"api_key": fake_openai.api_key, "base_url": fake_openai.base_url,
                        "organization": "org-1", "project": "proj-2"})
    p.complete("m", "x")
    headers = fake_openai.requests[-1].headers
    assert headers["openai-organization"] == "org-1" and headers["openai-project"] == "proj-2"


def test_wrong_key_keeps_openai_message(fake_openai):
    p = OpenAIProvider({"api_key": "sk-wrong-key-0000", "base_url": fake_openai.base_url})
    with pytest.raises(ProviderError) as info:
        p.complete("m", "x")
    err = info.value
    assert err.category is ErrorCategory.AUTH_ERROR and err.status_code == 401
    assert err.error_type == "invalid_api_key"
    assert err.provider_message.startswith("Incorrect API key provided")


def test_in_band_error_after_text(provider):
    chunks, err = drain_until_error(provider.stream("m", "a b c [[fault:stream_error:1]]"))
    assert chunks == ["echo:"]
    assert err.category is ErrorCategory.SERVER_ERROR and err.error_type == "server_error"


def test_closing_a_stream_early_releases_it(provider, fake_openai):
    stream = provider.stream("m", "a b c d e f")
    assert next(stream) == "echo:"
    stream.close()
    assert stream.result is None
    # The pool is still usable afterwards.
    assert provider.complete("m", "again").text == "echo: again"


def test_calls_and_finished_streams_reuse_one_pooled_connection(provider, caplog):
    caplog.set_level(logging.DEBUG, logger="urllib3.connectionpool")
    for i in range(5):
        assert provider.complete("m", f"n{i}").text == f"echo: n{i}"
        assert "".join(provider.stream("m", f"s{i}")) == f"echo: s{i}"
    opened = [r for r in caplog.records
              if "Starting new HTTP connection" in r.getMessage() or "Resetting dropped connection" in r.getMessage()]
    assert len(opened) == 1  # a stream read past [DONE] hands its connection back


def test_a_netrc_entry_for_the_host_does_not_replace_the_providers_key(fake_openai, tmp_path, monkeypatch):
    # requests, trusting the environment, would send ~/.netrc's login as Basic auth instead.
    host = fake_openai.base_url.split("//", 1)[1].split(":", 1)[0]
    netrc = tmp_path / "netrc"
    netrc.write_text(f"machine {host} login someone password hunter2\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    p = OpenAIProvider({"api_key": fake_openai.api_key, "base_url": fake_openai.base_url})
    try:
        assert p.complete("gpt-4o-mini", "hi").text == "echo: hi"
    finally:
        p.close()
    assert fake_openai.requests[-1].headers["authorization"] == f"Bearer {fake_openai.api_key}"


def test_proxy_settings_come_from_the_environment_once(fake_openai, monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    monkeypatch.setenv("NO_PROXY", "")
    p = OpenAIProvider({"api_key": "k", "base_url": "https://api.example.invalid/v1"})
    assert p.session.proxies.get("https") == "http://proxy.invalid:3128"
    p.close()
    monkeypatch.setenv("NO_PROXY", "api.example.invalid")
    p = OpenAIProvider({"api_key": "k", "base_url": "https://api.example.invalid/v1"})
    assert not p.session.proxies.get("https")  # NO_PROXY covers the base URL
    p.close()
    # The fake on loopback is reached directly even with a proxy set for http.
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.invalid:3128")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    p = OpenAIProvider({"api_key": fake_openai.api_key, "base_url": fake_openai.base_url})
    try:
        assert p.complete("gpt-4o-mini", "direct").text == "echo: direct"
    finally:
        p.close()
