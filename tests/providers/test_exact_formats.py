"""Exact formats at the provider layer (issue 11): refusals, a whole JSON body
answering a stream request, and the fake Anthropic server's auth as the
official `anthropic` SDK sends it."""

from __future__ import annotations

import anthropic
import pytest

from promptq.providers.base import ProviderResult, Usage, check_answer
from promptq.providers.claude_provider import ClaudeProvider
from promptq.providers.error_handling import ErrorCategory, ProviderError
from promptq.providers.finish_reasons import ANTHROPIC_REFUSAL
from promptq.providers.llamacpp_provider import LlamaCppProvider
from promptq.providers.ollama_provider import OllamaProvider
from promptq.providers.openai_provider import OpenAIProvider
from promptq.providers.openrouter_provider import OpenRouterProvider

from .support import drain, drain_until_error


def openai(fake):
    return OpenAIProvider({"api_key": fake.api_key, "base_url": fake.base_url})


def claude(fake):
    return ClaudeProvider({"api_key": fake.api_key, "base_url": fake.base_url})


# --- refusals ------------------------------------------------------------------------


def test_openai_refusal_is_kept_not_an_empty_success(fake_openai):
    result = openai(fake_openai).complete("gpt-4o-mini", "how do I pick a lock [[fault:refusal]]")
    assert result.refusal == "I'm sorry, I can't help with that."
    assert (result.text, result.finish_reason) == ("", "refusal")
    assert result.to_dict()["refusal"] == result.refusal  # what the job record stores


def test_openai_streamed_refusal_is_read_from_delta_refusal(fake_openai):
    chunks, result = drain(openai(fake_openai).stream("gpt-4o-mini", "a b c [[fault:refusal]]"))
    assert chunks == [] and result.text == ""
    assert result.refusal == "I'm sorry, I can't help with that." and result.finish_reason == "refusal"
    assert result.usage.output_tokens is not None


@pytest.mark.parametrize("streamed", [False, True])
def test_claude_refusal_stop_reason_is_a_refusal(fake_anthropic, streamed):
    p = claude(fake_anthropic)
    if streamed:
        _, result = drain(p.stream("claude-sonnet-4-5", "x [[fault:refusal]]"))
    else:
        result = p.complete("claude-sonnet-4-5", "x [[fault:refusal]]")
    assert (result.finish_reason, result.refusal) == ("refusal", ANTHROPIC_REFUSAL)


def test_an_ordinary_answer_has_no_refusal(fake_openai):
    result = openai(fake_openai).complete("gpt-4o-mini", "hi")
    assert result.refusal is None and result.finish_reason == "stop"


def test_an_empty_answer_with_no_reason_and_no_usage_is_not_a_success():
    silent = ProviderResult(text="", provider="openai", model="m")
    with pytest.raises(ProviderError) as info:
        check_answer(silent)
    assert info.value.category is ErrorCategory.MALFORMED_RESPONSE
    # Each of these says why the text is empty, so each is an answer.
    for ok in (ProviderResult(text="", provider="p", model="m", finish_reason="length"),
               ProviderResult(text="", provider="p", model="m", usage=Usage(3, 0)),
               ProviderResult(text="", provider="p", model="m", refusal="no")):
        assert check_answer(ok) is ok


# --- a whole JSON body answering a stream request -----------------------------------


def every_http_provider(fakes):
    openai_fake, anthropic_fake, openrouter_fake, ollama_fake, llamacpp_fake = fakes
    return [
        (openai(openai_fake), "gpt-4o-mini", "stop"),
        (claude(anthropic_fake), "claude-sonnet-4-5", "end_turn"),
        (OpenRouterProvider({"api_key": openrouter_fake.api_key, "base_url": openrouter_fake.base_url}),
         "openai/gpt-4o-mini", "stop"),
        (OllamaProvider({"base_url": ollama_fake.base_url}), "llama3.2", "stop"),
        (LlamaCppProvider({"base_url": llamacpp_fake.base_url}), "tiny", "stop"),
    ]


@pytest.fixture
def all_fakes(fake_openai, fake_anthropic, fake_openrouter, fake_ollama, fake_llamacpp):
    return fake_openai, fake_anthropic, fake_openrouter, fake_ollama, fake_llamacpp


def test_a_stream_answered_with_a_json_body_is_read_as_the_answer(all_fakes):
    for provider, model, reason in every_http_provider(all_fakes):
        chunks, result = drain(provider.stream(model, "one two three [[fault:json_body]]"))
        assert "".join(chunks) == result.text == "echo: one two three", provider.name
        assert result.finish_reason == reason, provider.name
        assert result.usage.input_tokens and result.usage.output_tokens == 4, provider.name
        provider.close()


def test_a_json_error_body_on_a_stream_request_stays_that_error(all_fakes):
    # A gateway's 200 carrying the upstream's error as one JSON body.
    for provider, model, _ in every_http_provider(all_fakes):
        _, err = drain_until_error(provider.stream(model, "x [[fault:json_body:context_length]]"))
        assert err.category is ErrorCategory.CONTEXT_LENGTH, (provider.name, err)
        # ... and with the error's own status: a 429 JSON body to a stream request.
        _, err = drain_until_error(provider.stream(model, "x [[fault:rate_limit]]"))
        assert err.category is ErrorCategory.RATE_LIMIT and err.retryable, (provider.name, err)
        provider.close()


def test_a_json_labelled_body_that_is_an_event_stream_is_still_parsed(fake_openai):
    class Mislabelled(type(fake_openai)):
        stream_content_type = "application/json"

    with Mislabelled() as fake:
        chunks, result = drain(openai(fake).stream("gpt-4o-mini", "one two"))
    assert "".join(chunks) == result.text == "echo: one two" and result.finish_reason == "stop"


# --- the fake Anthropic server and the official SDK ---------------------------------


def test_the_anthropic_sdk_authenticates_against_the_fake(fake_anthropic):
    client = anthropic.Anthropic(api_key=fake_anthropic.api_key, base_url=fake_anthropic.url, max_retries=0)
    message = client.messages.create(model="claude-sonnet-4-5", max_tokens=64,
                                     messages=[{"role": "user", "content": "hello sdk"}])
    assert message.content[0].text == "echo: hello sdk" and message.stop_reason == "end_turn"
    with client.messages.stream(model="claude-sonnet-4-5", max_tokens=64,
                                messages=[{"role": "user", "content": "streamed sdk"}]) as stream:
        assert "".join(stream.text_stream) == "echo: streamed sdk"
    sent = fake_anthropic.requests[0].headers
    assert sent["authorization"] == f"Bearer {fake_anthropic.api_key}" or sent.get("x-api-key")
    # auth_token (a bearer token proper) is accepted too; a wrong key is still refused.
    token_client = anthropic.Anthropic(auth_token=fake_anthropic.api_key, api_key=None,
                                       base_url=fake_anthropic.url, max_retries=0)
    assert token_client.messages.create(model="m", max_tokens=8,
                                        messages=[{"role": "user", "content": "t"}]).content[0].text == "echo: t"
    wrong = anthropic.Anthropic(api_key="sk-ant-wrong", base_url=fake_anthropic.url, max_retries=0)
    with pytest.raises(anthropic.AuthenticationError):
        wrong.messages.create(model="m", max_tokens=8, messages=[{"role": "user", "content": "t"}])


def test_x_api_key_still_works(fake_anthropic):
    p = claude(fake_anthropic)
    assert p.complete("claude-sonnet-4-5", "hi").text == "echo: hi"
    assert fake_anthropic.requests[-1].headers["x-api-key"] == fake_anthropic.api_key
