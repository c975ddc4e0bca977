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
    assert out.stdout == "echo: hello world [end of text]\n\n\n"  # natural end, then "\n\n"
    assert "llama_perf_context_print:       total time" in out.stderr
    # 3 words and the end-of-generation token sampled; the last is never evaluated.
    assert "/     4 runs" in out.stderr and "/     3 runs" in out.stderr


def test_prompt_is_echoed_unless_disabled(fake_llama_cli) -> None:
    out = run(fake_llama_cli, "-m", "m.gguf", "-p", "hi")
    assert out.stdout == "hiecho: hi [end of text]\n\n\n"


def test_n_predict_caps_the_words(fake_llama_cli) -> None:
    out = run(fake_llama_cli, "-m", "m.gguf", "-p", "a b c d", "-n", "2", "--no-display-prompt")
    assert out.stdout == "echo: a\n\n"  # stopped by -n: no end-of-text marker
    assert "/     1 runs" in out.stderr


def test_reply_directive(fake_llama_cli) -> None:
    out = run(fake_llama_cli, "-m", "m.gguf", "-p", "x [[reply:exact text]]", "--no-display-prompt")
    assert out.stdout == "exact text [end of text]\n\n\n"


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


def test_prompt_from_a_file_and_reverse_prompt(fake_llama_cli, tmp_path) -> None:
    prompt = tmp_path / "p.txt"
    prompt.write_text("[[reply:a b STOP c d]]\n")
    out = run(fake_llama_cli, "-m", "m.gguf", "-f", str(prompt), "-r", "STOP", "--no-display-prompt")
    assert out.returncode == 0 and out.stdout == "a b STOP\n\n" and "total time" in out.stderr


def test_prompt_longer_than_the_context_fails_with_its_message(fake_llama_cli) -> None:
    out = run(fake_llama_cli, "-m", "m.gguf", "-p", "one two three four five", "-c", "8")
    assert out.returncode == 1 and "prompt is too long (6 tokens, max 4)" in out.stderr
    lost = run(fake_llama_cli, "-m", "m.gguf", "-p", "one two three four five [[fault:lost_error]]", "-c", "8")
    assert lost.returncode == 1 and "too long" not in lost.stderr


def test_the_async_loggers_losses_exit_0_without_perf_lines(fake_llama_cli) -> None:
    cut = run(fake_llama_cli, "-m", "m.gguf", "-p", "a b c [[fault:lost_tail:1]]", "--no-display-prompt")
    assert cut.returncode == 0 and cut.stdout == "echo:" and "llama_perf" not in cut.stderr
    whole = run(fake_llama_cli, "-m", "m.gguf", "-p", "a b [[fault:no_perf]]", "--no-display-prompt")
    assert whole.returncode == 0 and whole.stdout.startswith("echo: a b") and "llama_perf" not in whole.stderr


def test_current_llama_cli_is_chat_only(fake_llama_cli) -> None:
    proc = subprocess.Popen([*fake_llama_cli, "--fake-binary=llama-cli", "-m", "m.gguf", "-p", "hi", "-no-cnv"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        assert proc.stdout.read(4) == b"\n> \n"  # its chat loop, prompting forever
        assert proc.poll() is None
    finally:
        proc.kill()
        _, err = proc.communicate()
    assert b"--no-conversation is not supported by llama-cli" in err
