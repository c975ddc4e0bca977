"""llama.cpp's subprocess mode against current binaries (issue 10, item 9):
the right binary and flags, runs that lost their end (llama.cpp's async
logger) never counted as answers, context overflow read from its message,
and output tokens counted as llama-server counts them. The stand-in is
tests/fakes/llama_cli.py."""

from __future__ import annotations

import pytest

from promptq.providers.error_handling import ErrorCategory, ProviderError
from promptq.providers.llamacpp_cli import DEFAULT_BINARY
from promptq.providers.llamacpp_provider import LlamaCppProvider

from .support import drain, drain_until_error


@pytest.fixture
def models_dir(tmp_path):
    (tmp_path / "tiny.gguf").write_bytes(b"GGUF")
    return tmp_path


def provider(binary, models_dir, **config):
    return LlamaCppProvider({"mode": "cli", "binary": binary, "models_dir": str(models_dir), "timeout": 20, **config})


@pytest.fixture
def cli(fake_llama_cli, models_dir):
    return provider(fake_llama_cli, models_dir)


def test_the_default_binary_is_llama_completion(models_dir, monkeypatch):
    monkeypatch.delenv("LLAMACPP_BINARY", raising=False)
    p = LlamaCppProvider({"mode": "cli", "models_dir": str(models_dir)})
    assert DEFAULT_BINARY == "llama-completion" and p.cli.binary == ["llama-completion"]


def test_a_chat_only_llama_cli_is_refused_at_once_naming_the_fix(fake_llama_cli, models_dir):
    # Current llama-cli rejects -no-cnv, then prints "> " prompts forever:
    # without the check this run would end only at the 20 s timeout.
    p = provider([*fake_llama_cli, "--fake-binary=llama-cli"], models_dir)
    for call in (lambda: p.complete("tiny", "hello"), lambda: list(p.stream("tiny", "hello"))):
        with pytest.raises(ProviderError) as info:
            call()
        assert (info.value.category, info.value.retryable) == (ErrorCategory.NOT_FOUND, False)
        assert "llama-completion" in str(info.value) and "LLAMACPP_BINARY" in str(info.value)


@pytest.mark.parametrize("fault", ["lost_tail:2", "lost_tail:0", "no_perf"])
def test_a_run_without_the_closing_perf_lines_is_incomplete_and_retryable(cli, fault):
    # Exit status 0, text cut short (or whole) but no performance lines: the
    # async logger dropped its queue. Never a success.
    for call in (lambda: cli.complete("tiny", f"one two three four [[fault:{fault}]]"),
                 lambda: drain(cli.stream("tiny", f"one two three four [[fault:{fault}]]"))):
        with pytest.raises(ProviderError) as info:
            call()
        assert (info.value.category, info.value.retryable) == (ErrorCategory.NETWORK_ERROR, True)
        assert "closing performance lines" in str(info.value)


def test_a_context_overflow_is_context_length_from_its_message(fake_llama_cli, models_dir):
    p = provider(fake_llama_cli, models_dir, cli_args=["-c", "8"])
    with pytest.raises(ProviderError) as info:
        p.complete("tiny", "a prompt that is far too long for eight tokens")
    assert (info.value.category, info.value.retryable) == (ErrorCategory.CONTEXT_LENGTH, False)
    assert "prompt is too long" in info.value.provider_message
    assert p.complete("tiny", "short").text == "echo: short"  # fits: 2 tokens + BOS


def test_an_exit_whose_message_was_lost_is_retryable_not_a_success(fake_llama_cli, models_dir):
    p = provider(fake_llama_cli, models_dir, cli_args=["-c", "8"])
    _, err = drain_until_error(p.stream("tiny", "far too long for eight tokens [[fault:lost_error]]"))
    assert (err.category, err.retryable) == (ErrorCategory.SERVER_ERROR, True)
    assert "without an error message" in str(err)


def test_load_chatter_mentioning_n_ctx_does_not_make_a_crash_a_context_error(cli):
    # stderr holds "llama_context: n_ctx = 4096" from the load; the crash is the decode error.
    _, err = drain_until_error(cli.stream("tiny", "a b [[fault:crash:1]]"))
    assert err.category is ErrorCategory.SERVER_ERROR and err.retryable


def test_output_tokens_count_the_last_sampled_token(cli):
    limited = cli.complete("tiny", "a b c d e f", parameters={"max_tokens": 3})
    # 3 sampled, 2 evaluated ("/ 2 runs"): llama-server says 3.
    assert (limited.text, limited.usage.output_tokens, limited.finish_reason) == ("echo: a b", 3, "length")
    natural = cli.complete("tiny", "[[reply:x y]]", parameters={"max_tokens": 50})
    # 2 words and the end-of-generation token sampled, 2 evaluated.
    assert (natural.text, natural.usage.output_tokens, natural.finish_reason) == ("x y", 3, "stop")


def test_a_stop_string_stops_llama_cpp_and_keeps_its_usage(cli):
    result = cli.complete("tiny", "[[reply:alpha beta ### gamma delta]]", parameters={"stop": "###"})
    assert result.text == "alpha beta " and result.finish_reason == "stop"
    assert result.usage.output_tokens == 3  # alpha, beta, ### (llama.cpp stopped there, -r)


def test_a_prompt_longer_than_an_argv_string_can_be_is_sent(fake_llama_cli, models_dir):
    # Linux caps one argv string at 128 KiB; the prompt goes through a file.
    p = provider(fake_llama_cli, models_dir, cli_args=["-c", "65536"])
    prompt = "word " * 40_000  # 200 KB
    result = p.complete("tiny", f"[[reply:ok]] {prompt}")
    assert result.text == "ok" and result.usage.input_tokens == 40_002
