"""The fake llama-cli script, run as a subprocess the way the provider will."""

from __future__ import annotations

import subprocess
import time


def run(cli: list[str], *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([*cli, *args], capture_output=True, text=True, timeout=timeout)


def test_reply_on_stdout_logs_on_stderr(fake_llama_cli) -> None:
    out = run(fake_llama_cli, "-m", "m.gguf", "-p", "hello world", "--no-display-prompt",
              "-no-cnv", "-c", "2048", "--temp", "0")
    assert out.returncode == 0
    assert out.stdout == "echo: hello world\n"
    assert "llama_perf_context_print" in out.stderr


def test_prompt_is_echoed_unless_disabled(fake_llama_cli) -> None:
    out = run(fake_llama_cli, "-m", "m.gguf", "-p", "hi")
    assert out.stdout == "hiecho: hi\n"


def test_n_predict_caps_the_words(fake_llama_cli) -> None:
    out = run(fake_llama_cli, "-m", "m.gguf", "-p", "a b c d", "-n", "2", "--no-display-prompt")
    assert out.stdout == "echo: a\n"


def test_reply_directive(fake_llama_cli) -> None:
    out = run(fake_llama_cli, "-m", "m.gguf", "-p", "x [[reply:exact text]]", "--no-display-prompt")
    assert out.stdout == "exact text\n"


def test_slow_sleeps_first(fake_llama_cli) -> None:
    start = time.monotonic()
    out = run(fake_llama_cli, "-m", "m.gguf", "-p", "x [[fault:slow:0.5]]", "--no-display-prompt")
    assert out.returncode == 0 and time.monotonic() - start >= 0.5


def test_crash_exits_1_after_partial_output(fake_llama_cli) -> None:
    out = run(fake_llama_cli, "-m", "m.gguf", "-p", "a b c [[fault:crash:2]]", "--no-display-prompt")
    assert out.returncode == 1
    assert out.stdout == "echo: a"
    assert "failed to decode" in out.stderr


def test_not_found_reports_the_missing_model_file(fake_llama_cli) -> None:
    out = run(fake_llama_cli, "-m", "/models/missing.gguf", "-p", "x [[fault:not_found]]")
    assert out.returncode == 1 and out.stdout == ""
    assert "failed to open '/models/missing.gguf'" in out.stderr
    assert out.stderr.rstrip().endswith("main: error: unable to load model")


def test_hang_never_finishes(fake_llama_cli) -> None:
    proc = subprocess.Popen([*fake_llama_cli, "-m", "m.gguf", "-p", "[[fault:hang]]"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        try:
            proc.wait(timeout=1)
            raise AssertionError("the hung llama-cli exited")
        except subprocess.TimeoutExpired:
            pass
    finally:
        proc.kill()
        proc.wait()
