"""Abandoning a provider call from another thread (providers.abort): the
blocked HTTP call fails at once, its connection closed, and the pool stays
usable; outside a scope nothing changes."""

from __future__ import annotations

import threading

import pytest

from promptq.providers.abort import CallAborted, abortable
from promptq.providers.error_handling import ProviderError
from promptq.providers.mock_provider import MockProvider
from promptq.providers.openai_provider import OpenAIProvider
from tests.worker_process import wait_for


def test_abort_cuts_a_blocked_http_call(fake_openai):
    provider = OpenAIProvider({"api_key": fake_openai.api_key, "base_url": fake_openai.base_url})
    outcome = {}

    def call():
        with abortable() as scope:
            outcome["scope"] = scope
            try:
                provider.complete("gpt-4o-mini", "think [[fault:slow:30]]")
            except ProviderError as exc:
                outcome["error"] = exc

    thread = threading.Thread(target=call)
    thread.start()
    fake_openai.wait_for_requests(1, timeout=10)
    outcome["scope"].abort()
    thread.join(5)  # 30 s if the connection were not cut
    assert not thread.is_alive()
    assert outcome["error"].category.value == "network"
    # The pool is still good for the next call.
    assert provider.complete("gpt-4o-mini", "after").text.endswith("after")


def test_a_finished_scope_cannot_cut_pooled_connections(fake_openai):
    provider = OpenAIProvider({"api_key": fake_openai.api_key, "base_url": fake_openai.base_url})
    with abortable() as scope:
        provider.complete("gpt-4o-mini", "one")
    scope.abort()  # too late: its connection is back in the pool, someone else's
    assert provider.complete("gpt-4o-mini", "two").text.endswith("two")


def test_the_mock_wait_is_abortable_too():
    mock = MockProvider({"latency_s": 30})
    with abortable() as scope:
        threading.Timer(0.2, scope.abort).start()
        with pytest.raises(CallAborted):
            mock.complete("m", "slow")


def test_abort_kills_a_llama_cpp_run(fake_llama_cli, tmp_path):
    from promptq.providers.llamacpp_provider import LlamaCppProvider

    (tmp_path / "tiny.gguf").write_bytes(b"GGUF")
    provider = LlamaCppProvider({"mode": "cli", "binary": fake_llama_cli, "models_dir": str(tmp_path), "timeout": 60})
    outcome = {}

    def call():
        with abortable() as scope:
            outcome["scope"] = scope
            try:
                for piece in provider.stream("tiny", "a b c d e f g h [[fault:slow_stream:5]]"):
                    outcome.setdefault("first", piece)
            except ProviderError as exc:
                outcome["error"] = exc

    thread = threading.Thread(target=call)
    thread.start()
    wait_for(lambda: "first" in outcome, 20, 0.01, "the run to be under way")
    outcome["scope"].abort()
    thread.join(4)  # a word every 5 s: 35 s more if the process were left running
    assert not thread.is_alive() and "error" in outcome
