"""OllamaProvider against FakeOllama: /api/chat, NDJSON streams and options."""

from __future__ import annotations

import pytest

from promptq.providers.error_handling import ErrorCategory, ProviderError
from promptq.providers.ollama_provider import OllamaProvider
from tests.fakes.ollama_server import FakeOllama

from .support import drain, drain_until_error


@pytest.fixture
def provider(fake_ollama):
    p = OllamaProvider({"base_url": fake_ollama.base_url})
    yield p
    p.close()


def test_complete_sends_stream_false_and_reads_the_final_object(provider, fake_ollama):
    result = provider.complete("llama3.2", "hello there", system_prompt="be brief")
    assert result.text == "echo: hello there"
    assert (result.provider, result.model, result.finish_reason) == ("ollama", "llama3.2", "stop")
    # prompt_eval_count / eval_count, as Ollama reports them
    assert (result.usage.input_tokens, result.usage.output_tokens) == (4, 3)
    req = fake_ollama.requests[-1]
    assert (req.method, req.path) == ("POST", "/api/chat")
    assert req.body["stream"] is False  # Ollama streams unless told not to
    assert req.body["messages"] == [{"role": "system", "content": "be brief"},
                                    {"role": "user", "content": "hello there"}]


def test_stream_reads_ndjson_until_done(provider, fake_ollama):
    chunks, result = drain(provider.stream("llama3.2", "one two three"))
    assert chunks == ["echo:", " one", " two", " three"]
    assert result.text == "echo: one two three" and result.finish_reason == "stop"
    assert (result.usage.input_tokens, result.usage.output_tokens) == (3, 4)
    assert fake_ollama.requests[-1].body["stream"] is True


def test_parameters_become_options(fake_ollama):
    p = OllamaProvider({"base_url": fake_ollama.base_url, "keep_alive": "10m"})
    params = {"temperature": 0.1, "top_p": 0.5, "max_tokens": 77, "stop": ["###"], "seed": 3,
              "num_ctx": 4096, "format": "json"}
    p.complete("llama3.2", "x", parameters=params)
    body = fake_ollama.requests[-1].body
    assert body["options"] == {"temperature": 0.1, "top_p": 0.5, "num_predict": 77, "stop": ["###"],
                               "seed": 3, "num_ctx": 4096}
    assert (body["keep_alive"], body["format"]) == ("10m", "json")


def test_no_options_field_without_parameters(provider, fake_ollama):
    provider.complete("llama3.2", "x")
    assert "options" not in fake_ollama.requests[-1].body


def test_no_auth_header_by_default_and_bearer_when_configured(fake_ollama):
    OllamaProvider({"base_url": fake_ollama.base_url}).complete("m", "x")
    assert "authorization" not in fake_ollama.requests[-1].headers
    with FakeOllama(api_key="proxy-token-123") as guarded:
        assert OllamaProvider({"base_url": guarded.base_url, "api_key": "proxy-token-123"}).complete("m", "y").text == "echo: y"
        with pytest.raises(ProviderError) as info:
            OllamaProvider({"base_url": guarded.base_url}).complete("m", "y")
        assert info.value.category is ErrorCategory.AUTH_ERROR


@pytest.mark.parametrize("form", ["{host}:{port}", "http://{host}:{port}", "http://{host}:{port}/"])
def test_ollama_host_in_its_usual_forms(fake_ollama, monkeypatch, form):
    monkeypatch.setenv("OLLAMA_HOST", form.format(host="127.0.0.1", port=fake_ollama.port))
    assert OllamaProvider().complete("m", "env").text == "echo: env"


def test_ollama_host_zero_address_means_loopback(monkeypatch):
    monkeypatch.setenv("OLLAMA_HOST", "0.0.0.0:11434")
    assert OllamaProvider().base_url == "http://127.0.0.1:11434"
    monkeypatch.delenv("OLLAMA_HOST")
    p = OllamaProvider()
    assert p.base_url == "http://127.0.0.1:11434" and p.needs_key is False


def test_unknown_model_keeps_ollamas_hint(provider):
    with pytest.raises(ProviderError) as info:
        provider.complete("nope", "x [[fault:not_found]]")
    assert info.value.category is ErrorCategory.NOT_FOUND
    assert info.value.provider_message == 'model "nope" not found, try pulling it first'


def test_error_line_mid_stream(provider):
    chunks, err = drain_until_error(provider.stream("m", "a b c [[fault:stream_error:3]]"))
    assert chunks == ["echo:", " a", " b"]
    assert err.category is ErrorCategory.SERVER_ERROR and err.retryable
    assert err.provider_message == "an error was encountered while running the model"


def test_usage_limit_429_is_quota_and_busy_503_is_overloaded(provider):
    with pytest.raises(ProviderError) as quota:
        provider.complete("m", "x [[fault:quota]]")
    assert (quota.value.category, quota.value.retryable) == (ErrorCategory.QUOTA_EXHAUSTED, False)
    with pytest.raises(ProviderError) as busy:
        provider.complete("m", "x [[fault:overloaded]]")
    assert (busy.value.category, busy.value.retryable) == (ErrorCategory.OVERLOADED, True)
