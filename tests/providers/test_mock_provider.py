"""The mock provider: deterministic answers, streaming shape, and every injected fault."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from promptq.providers import create_provider
from promptq.providers.base import ProviderStream
from promptq.providers.error_handling import RETRYABLE_CATEGORIES, ErrorCategory, ProviderError
from promptq.providers.mock_provider import MockProvider

ROOT = Path(__file__).resolve().parents[2]


def drain(stream):
    chunks = []
    try:
        for chunk in stream:
            chunks.append(chunk)
    except ProviderError as exc:
        return chunks, exc
    return chunks, None


def test_created_by_name_needs_no_key_and_answers_from_the_prompt():
    provider = create_provider("mock")
    assert isinstance(provider, MockProvider) and provider.needs_key is False
    assert provider.execute("m", "hello there") == "mock reply to: hello there"
    assert provider.execute("m", "hello there") == "mock reply to: hello there"


def test_complete_reports_usage_model_and_provider():
    result = MockProvider({"instance_name": "mock-a"}).complete("tiny", "one two three", "be brief")
    assert result.text == "mock reply to: one two three"
    assert (result.provider, result.model, result.finish_reason) == ("mock-a", "tiny", "stop")
    assert (result.usage.input_tokens, result.usage.output_tokens) == (5, 6)
    assert result.latency_s >= 0


def test_reply_template_and_messages():
    provider = MockProvider({"reply": "[{name}/{model}] {prompt} {literal}", "instance_name": "x"})
    assert provider.execute("m1", "a {b} c") == "[x/m1] a {b} c {literal}"
    messages = [{"role": "user", "content": "first"}, {"role": "assistant", "content": "ok"},
                {"role": "user", "content": [{"type": "text", "text": "second"}]}]
    assert provider.complete("m", messages=messages).text == "[x/m] second {literal}"


def test_stream_chunks_join_to_the_complete_text_and_keep_the_result():
    provider = MockProvider()
    stream = provider.stream("m", "the quick brown fox")
    assert isinstance(stream, ProviderStream)
    chunks = list(stream)
    assert chunks == ["mock", " reply", " to:", " the", " quick", " brown", " fox"]
    assert stream.result.text == "".join(chunks) == provider.execute("m", "the quick brown fox")
    assert stream.result.usage.output_tokens == 7
    assert list(MockProvider({"chunk_size": 3}).stream_execute("m", "the quick brown fox")) == [
        "mock reply to:", " the quick brown", " fox",
    ]
    assert len(list(MockProvider({"chunks": 2}).stream("m", "the quick brown fox"))) == 2


def test_latency_and_chunk_delay_use_the_injected_sleep():
    slept = []
    provider = MockProvider({"latency_s": 0.5, "chunk_delay_s": 0.1}, sleep=slept.append)
    assert list(provider.stream("m", "a b")) == ["mock", " reply", " to:", " a", " b"]
    assert slept == [0.5] + [0.1] * 4
    slept.clear()
    provider.execute("m", "x")
    assert slept == [0.5]


@pytest.mark.parametrize("category", list(ErrorCategory), ids=lambda c: c.value)
def test_each_category_raises_a_real_provider_error(category):
    provider = MockProvider({"instance_name": "mock-a"})
    prompt = f"hi [[fault:{category.value}]]"
    with pytest.raises(ProviderError) as caught:
        provider.execute("m", prompt)
    error = caught.value
    assert error.category is category
    assert error.retryable is (category in RETRYABLE_CATEGORIES)
    assert error.provider == "mock-a"
    chunks, streamed = drain(provider.stream("m", prompt))
    assert chunks == [] and streamed.category is category


def test_status_codes_look_like_the_vendors():
    provider = MockProvider()
    codes = {}
    for kind in ("auth", "rate_limit", "not_found", "invalid", "server", "overloaded", "network"):
        with pytest.raises(ProviderError) as caught:
            provider.execute("m", f"[[fault:{kind}]]")
        codes[kind] = caught.value.status_code
    assert codes == {"auth": 401, "rate_limit": 429, "not_found": 404, "invalid": 400,
                     "server": 500, "overloaded": 529, "network": None}


def test_retry_after_and_aliases():
    provider = MockProvider()
    for prompt, expected in [("[[fault:rate_limit:2]]", 2.0), ("[[fault:overloaded:retry_after=1.5]]", 1.5),
                             ("[[fault:rate_limit]]", None)]:
        with pytest.raises(ProviderError) as caught:
            provider.execute("m", prompt)
        assert caught.value.retry_after == expected
    with pytest.raises(ProviderError) as caught:
        provider.execute("m", "[[fault:timeout]]")
    assert caught.value.category is ErrorCategory.NETWORK_ERROR


def test_drop_streams_some_chunks_then_cuts_the_connection():
    provider = MockProvider()
    chunks, error = drain(provider.stream("m", "one two three four [[fault:drop:3]]"))
    assert chunks == ["mock", " reply", " to:"]
    assert error.category is ErrorCategory.NETWORK_ERROR and error.retryable
    with pytest.raises(ProviderError) as caught:
        provider.execute("m", "one [[fault:drop:3]]")
    assert caught.value.category is ErrorCategory.NETWORK_ERROR
    chunks, error = drain(provider.stream("m", "short [[fault:drop:50]]"))
    assert "".join(chunks) == "mock reply to: short" and error is not None


def test_fail_times_fails_then_succeeds_per_prompt():
    provider = MockProvider()
    outcomes = []
    for _ in range(4):
        try:
            outcomes.append(provider.execute("m", "job-1 [[fail_times:2]]"))
        except ProviderError as exc:
            assert exc.category is ErrorCategory.SERVER_ERROR and exc.retryable
            outcomes.append("failed")
    assert outcomes == ["failed", "failed", "mock reply to: job-1", "mock reply to: job-1"]
    with pytest.raises(ProviderError):  # another prompt has its own count
        provider.execute("m", "job-2 [[fail_times:2]]")
    with pytest.raises(ProviderError) as caught:
        provider.execute("m", "job-3 [[fail_times:1:rate_limit]]")
    assert caught.value.category is ErrorCategory.RATE_LIMIT
    assert provider.execute("m", "job-3 [[fail_times:1:rate_limit]]") == "mock reply to: job-3"
    with pytest.raises(ProviderError):
        provider.execute("m", "job-4 [[fault:overloaded:once]]")
    assert provider.execute("m", "job-4 [[fault:overloaded:once]]") == "mock reply to: job-4"


def test_scoped_directives_match_instance_name_or_model():
    prompt = "q [[fault@flaky:auth]]"
    plain = MockProvider()
    with pytest.raises(ProviderError) as caught:
        plain.execute("flaky", prompt)
    assert caught.value.category is ErrorCategory.AUTH_ERROR
    assert plain.execute("good", prompt) == "mock reply to: q"
    with pytest.raises(ProviderError):
        MockProvider({"instance_name": "flaky"}).execute("any-model", prompt)


def outcomes(provider, prompt, calls=4):
    """What each of `calls` calls with `prompt` did: "ok" or the error's category."""
    kinds = []
    for _ in range(calls):
        try:
            provider.execute("m", prompt)
            kinds.append("ok")
        except ProviderError as exc:
            kinds.append(exc.category.value)
    return kinds


def test_configured_faults():
    broken = MockProvider({"fault": "auth"})
    for _ in range(3):
        with pytest.raises(ProviderError) as caught:
            broken.execute("m", "hi")
        assert caught.value.category is ErrorCategory.AUTH_ERROR
    flaky = MockProvider({"faults": ["rate_limit:1", "server"]})
    assert outcomes(flaky, "p1") == ["rate_limit", "server", "ok", "ok"]
    with pytest.raises(ProviderError):
        flaky.execute("m", "p2")  # counted per prompt
    from_env = MockProvider({"faults": "server, ok ,auth"})  # a config file or env var's form
    assert outcomes(from_env, "p3") == ["server", "ok", "auth", "ok"]


def test_bad_directives_and_parameters_are_invalid_requests():
    provider = MockProvider()
    for prompt in ("[[fault:nonsense]]", "[[fault:drop:many]]", "[[fail_times:x]]"):
        with pytest.raises(ProviderError) as caught:
            provider.execute("m", prompt)
        assert caught.value.category is ErrorCategory.INVALID_REQUEST
    with pytest.raises(ProviderError) as caught:
        provider.execute("m", "hi", parameters={"temperature": "hot"})
    assert caught.value.category is ErrorCategory.INVALID_REQUEST


def test_max_tokens_and_stop():
    provider = MockProvider()
    result = provider.complete("m", "a b c d e", parameters={"max_tokens": 4})
    assert (result.text, result.finish_reason, result.usage.output_tokens) == ("mock reply to: a", "length", 4)
    stream = provider.stream("m", "a b c d e", parameters={"max_tokens": 4})
    assert "".join(stream) == "mock reply to: a" and stream.result.finish_reason == "length"
    assert provider.execute("m", "a b STOP c", parameters={"stop": ["STOP"]}) == "mock reply to: a b "


RUN_ONCE = """
import sys
from promptq.providers.mock_provider import MockProvider
from promptq.providers.error_handling import ProviderError
try:
    print(MockProvider({"state_url": sys.argv[1]}).execute("m", sys.argv[2]))
except ProviderError as exc:
    print("failed:" + exc.category.value)
"""


def run_in_new_process(state_url: str, prompt: str) -> str:
    done = subprocess.run([sys.executable, "-c", RUN_ONCE, state_url, prompt], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=True)
    return done.stdout.strip()


@pytest.mark.parametrize("backend", ["file", "redis"])
def test_fail_times_holds_across_processes(backend, tmp_path, request):
    if backend == "redis":
        server = request.getfixturevalue("redis_server")
        request.getfixturevalue("redis_client")  # flushed
        state_url = server.url
    else:
        state_url = str(tmp_path / "counters")
    prompt = "cross-process [[fail_times:1]]"
    assert run_in_new_process(state_url, prompt) == "failed:server"
    assert run_in_new_process(state_url, prompt) == "mock reply to: cross-process"
    assert MockProvider({"state_url": state_url}).execute("m", prompt) == "mock reply to: cross-process"
