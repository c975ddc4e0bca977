"""LlamaCppProvider: llama-server over HTTP, and llama-cli as a subprocess.

CLI mode runs tests/fakes/llama_cli.py, a stand-in that writes to stdout and
stderr and exits the way llama-cli does.
"""

from __future__ import annotations

import os
import stat
import sys

import pytest

from promptq.providers.error_handling import ErrorCategory, ProviderError, register_secret
from promptq.providers.llamacpp_cli import StopFilter
from promptq.providers.llamacpp_provider import LlamaCppProvider, render_prompt
from tests.fakes import LLAMA_CLI
from tests.fakes.llamacpp_server import FakeLlamaServer

from .support import drain, drain_until_error

# --- server mode -----------------------------------------------------------------


def test_server_mode_complete_and_stream(fake_llamacpp):
    p = LlamaCppProvider({"base_url": fake_llamacpp.base_url})
    result = p.complete("qwen", "hello there")
    assert (result.text, result.provider, result.finish_reason) == ("echo: hello there", "llamacpp", "stop")
    assert (result.usage.input_tokens, result.usage.output_tokens) == (2, 3)
    chunks, result = drain(p.stream("qwen", "one two"))
    assert chunks == ["echo:", " one", " two"] and result.text == "echo: one two"
    assert (result.usage.input_tokens, result.usage.output_tokens) == (2, 3)


def test_server_mode_request_shape(fake_llamacpp):
    p = LlamaCppProvider({"base_url": fake_llamacpp.base_url})
    drain(p.stream("qwen", "hi", parameters={"max_tokens": 12, "top_k": 20, "n_probs": 2}))
    req = fake_llamacpp.requests[-1]
    assert (req.method, req.path) == ("POST", "/v1/chat/completions")
    assert "authorization" not in req.headers  # no key configured, none sent
    assert (req.body["max_tokens"], req.body["top_k"], req.body["n_probs"]) == (12, 20, 2)
    assert req.body["stream"] is True and req.body["stream_options"] == {"include_usage": True}


def test_server_mode_api_key_from_the_environment(monkeypatch):
    with FakeLlamaServer(api_key="llama-secret-key") as fake:
        monkeypatch.setenv("LLAMACPP_BASE_URL", fake.base_url)
        monkeypatch.setenv("LLAMACPP_API_KEY", "llama-secret-key")
        assert LlamaCppProvider().complete("m", "x").text == "echo: x"
        assert fake.requests[-1].headers["authorization"] == "Bearer llama-secret-key"
        monkeypatch.delenv("LLAMACPP_API_KEY")
        with pytest.raises(ProviderError) as info:
            LlamaCppProvider().complete("m", "x")
        assert info.value.category is ErrorCategory.AUTH_ERROR
        assert info.value.provider_message == "Invalid API Key"


def test_server_mode_defaults(monkeypatch):
    for var in ("LLAMACPP_BASE_URL", "LLAMACPP_MODE", "LLAMACPP_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    p = LlamaCppProvider()
    assert (p.mode, p.base_url, p.needs_key) == ("server", "http://127.0.0.1:8080/v1", False)


def test_context_size_error_is_context_length(fake_llamacpp):
    with pytest.raises(ProviderError) as info:
        LlamaCppProvider({"base_url": fake_llamacpp.base_url}).complete("m", "x [[fault:context_length]]")
    assert info.value.category is ErrorCategory.CONTEXT_LENGTH
    assert info.value.error_type == "exceed_context_size_error"


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="mode"):
        LlamaCppProvider({"mode": "telepathy"})


# --- cli mode ----------------------------------------------------------------------


@pytest.fixture
def models_dir(tmp_path):
    (tmp_path / "tiny.gguf").write_bytes(b"GGUF")
    return tmp_path


@pytest.fixture
def cli(fake_llama_cli, models_dir):
    return LlamaCppProvider({"mode": "cli", "binary": fake_llama_cli, "models_dir": str(models_dir), "timeout": 20})


def test_cli_complete(cli):
    result = cli.complete("tiny", "hello there")
    assert (result.text, result.provider, result.model, result.finish_reason) == (
        "echo: hello there", "llamacpp", "tiny", "stop")
    # "eval time ... / 3 runs" on stderr, plus the end-of-generation token
    # (sampled, never evaluated) that llama-server counts too.
    assert result.usage.output_tokens == 4 and result.usage.input_tokens == 3


def test_cli_stream_reads_stdout_as_it_is_written(cli):
    # The stand-in pauses between words; each word must arrive as its own chunk.
    chunks, result = drain(cli.stream("tiny", "one two three [[fault:slow_stream:0.05]]"))
    assert chunks == ["echo:", " one", " two", " three"]
    assert result.text == "echo: one two three"


def test_cli_command_line(cli, models_dir):
    argv, stops = cli.cli.command("tiny", "the prompt", {"max_tokens": 9, "temperature": 0.4, "seed": 5,
                                                         "stop": "###"})
    assert argv[:2] == [sys.executable, LLAMA_CLI]
    assert argv[argv.index("-m") + 1] == str(models_dir / "tiny.gguf")
    assert argv[argv.index("-f") + 1] == "the prompt"  # the prompt file's path
    assert {"-no-cnv", "--no-display-prompt"} <= set(argv) and argv[argv.index("-r") + 1] == "###"
    assert argv[argv.index("-n") + 1] == "9" and argv[argv.index("--temp") + 1] == "0.4"
    assert argv[argv.index("--seed") + 1] == "5" and stops == ["###"]


def test_cli_stop_strings_cut_the_output(cli):
    chunks, result = drain(cli.stream("tiny", "[[reply:alpha beta ### gamma]]", parameters={"stop": "###"}))
    assert result.text == "alpha beta " and "".join(chunks) == result.text


def test_cli_end_of_text_marker_is_not_part_of_the_answer(cli):
    assert cli.complete("tiny", "[[reply:done [end of text] ]]").text == "done"


def test_cli_max_tokens_is_passed_as_n_predict(cli):
    assert cli.complete("tiny", "a b c d e f", parameters={"max_tokens": 2}).text == "echo: a"


def test_cli_prompt_with_system_and_history():
    chat = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]
    assert render_prompt(chat) == "System: S\nUser: U\nAssistant:"
    assert render_prompt([{"role": "user", "content": "only"}]) == "only"


def test_cli_timeout_kills_the_run_and_is_retryable_network_error(fake_llama_cli, models_dir):
    p = LlamaCppProvider({"mode": "cli", "binary": fake_llama_cli, "models_dir": str(models_dir), "timeout": 0.5})
    for call in (lambda: p.complete("tiny", "x [[fault:hang]]"), lambda: list(p.stream("tiny", "x [[fault:hang]]"))):
        with pytest.raises(ProviderError) as info:
            call()
        assert (info.value.category, info.value.retryable) == (ErrorCategory.NETWORK_ERROR, True)
        assert "timed out" in str(info.value)


def test_cli_crash_after_output_is_classified_with_stderr_tail(cli):
    chunks, err = drain_until_error(cli.stream("tiny", "a b c [[fault:crash:2]]"))
    assert "".join(chunks) == "echo: a"
    assert err.category is ErrorCategory.SERVER_ERROR and err.retryable
    assert "exited with status 1" in err.message
    assert "failed to decode" in err.provider_message  # the stderr tail is kept


def test_cli_model_load_failure_is_not_found(cli):
    with pytest.raises(ProviderError) as info:
        cli.complete("tiny", "x [[fault:not_found]]")
    assert (info.value.category, info.value.retryable) == (ErrorCategory.NOT_FOUND, False)
    assert "unable to load model" in info.value.provider_message


def test_cli_missing_binary_is_a_clear_permanent_error(models_dir):
    p = LlamaCppProvider({"mode": "cli", "binary": "/nonexistent/llama-cli", "models_dir": str(models_dir)})
    with pytest.raises(ProviderError) as info:
        p.complete("tiny", "x")
    err = info.value
    assert (err.category, err.retryable) == (ErrorCategory.NOT_FOUND, False)
    assert "/nonexistent/llama-cli" in str(err) and "LLAMACPP_BINARY" in str(err)


def test_cli_missing_model_file_is_not_found_before_running(cli):
    with pytest.raises(ProviderError) as info:
        cli.complete("absent-model", "x")
    assert info.value.category is ErrorCategory.NOT_FOUND and "LLAMACPP_MODELS_DIR" in str(info.value)


def test_cli_model_resolution(fake_llama_cli, models_dir):
    by_path = LlamaCppProvider({"mode": "cli", "binary": fake_llama_cli})
    assert by_path.cli.model_file(str(models_dir / "tiny.gguf")) == str(models_dir / "tiny.gguf")
    fallback = LlamaCppProvider({"mode": "cli", "binary": fake_llama_cli, "model_path": str(models_dir / "tiny.gguf")})
    assert fallback.cli.model_file("whatever") == str(models_dir / "tiny.gguf")
    in_dir = LlamaCppProvider({"mode": "cli", "binary": fake_llama_cli, "models_dir": str(models_dir)})
    assert in_dir.cli.model_file("tiny.gguf") == in_dir.cli.model_file("tiny") == str(models_dir / "tiny.gguf")


def test_cli_configured_from_the_environment(tmp_path, models_dir, monkeypatch):
    wrapper = tmp_path / "llama-cli"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{LLAMA_CLI}" "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("LLAMACPP_MODE", "cli")
    monkeypatch.setenv("LLAMACPP_BINARY", str(wrapper))
    monkeypatch.setenv("LLAMACPP_MODELS_DIR", str(models_dir))
    assert LlamaCppProvider().complete("tiny", "from env").text == "echo: from env"


def test_cli_stderr_tail_is_redacted(fake_llama_cli, tmp_path):
    # llama-cli logs the model path; a secret in it must not reach the error.
    secret = "cli-secret-token-98765"
    register_secret(secret)
    model = tmp_path / f"{secret}.gguf"
    model.write_bytes(b"GGUF")
    p = LlamaCppProvider({"mode": "cli", "binary": fake_llama_cli})
    with pytest.raises(ProviderError) as info:
        p.complete(str(model), "x [[fault:not_found]]")
    err = info.value
    assert secret not in str(err) and secret not in repr(err) and secret not in str(err.to_dict())
    assert "[REDACTED]" in err.provider_message


def test_stop_filter_finds_stops_split_across_chunks():
    f = StopFilter(["STOP"])
    out = [f.feed(piece) for piece in ["abc S", "T", "O", "Px"]]
    assert "".join(out) == "abc " and f.stopped_on == "STOP"
    g = StopFilter(["STOP"])
    assert g.feed("abc ST") == "abc " and g.feed("AR") == "STAR" and g.finish() == ""


def test_cli_does_not_leave_processes_behind(fake_llama_cli, models_dir):
    p = LlamaCppProvider({"mode": "cli", "binary": fake_llama_cli, "models_dir": str(models_dir), "timeout": 20})
    stream = p.stream("tiny", "a b c d [[fault:slow_stream:0.05]]")
    assert next(stream) == "echo:"
    stream.close()  # kills the child; a leaked one would keep the pipe open
    children = [pid for pid in _child_pids() if _cmdline(pid) and LLAMA_CLI in _cmdline(pid)]
    assert children == []


def _child_pids() -> list:
    try:
        with open(f"/proc/{os.getpid()}/task/{os.getpid()}/children") as handle:
            return [int(pid) for pid in handle.read().split()]
    except OSError:
        pytest.skip("needs /proc")


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().replace(b"\0", b" ").decode()
    except OSError:
        return ""
