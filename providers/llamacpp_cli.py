"""Running llama.cpp as a subprocess: the llama.cpp provider's "cli" mode.

The binary: `llama-completion` (LLAMACPP_BINARY). Current llama.cpp split
single-prompt completion out of `llama-cli`, which is now chat-only: it
answers `-no-cnv` with "--no-conversation is not supported by llama-cli,
please use llama-completion instead" and then sits in its chat loop printing
"> " prompts. Builds from before the split call the same program `llama-cli`
and take the same flags, so pointing LLAMACPP_BINARY at one works; a
chat-only `llama-cli` is recognised from that message and refused at once
(NOT_FOUND, naming the setting) instead of running into the timeout.

The command is `llama-completion -m MODEL -f PROMPT_FILE -no-cnv
--no-display-prompt -n N [-r STOP ...] [--temp ...]`: the prompt goes in a
temporary file, since one argv string is capped at 128 KiB on Linux (and
would show in `ps`); `-r` makes llama.cpp itself stop at a stop string
(promptq still cuts the text there).

What a run must show before it counts as an answer:

- llama.cpp prints text and logs through an asynchronous logger that can
  drop what is still queued when the process exits, with status 0. Its
  closing performance lines (`llama_perf_context_print: ... total time`)
  are the last thing it logs, through the same queue, so a run without
  them may have lost text: it fails as a retryable NETWORK_ERROR, never as
  a success with truncated text.
- A non-zero exit is classified from llama.cpp's error lines ("prompt is
  too long (N tokens, max M)" is CONTEXT_LENGTH; a failed model load is
  NOT_FOUND); the redacted stderr tail is kept as the provider message. One
  with no error line left (the logger lost it) is a retryable SERVER_ERROR.
- Usage: prompt tokens from "prompt eval time = ... / N tokens"; output
  tokens are "eval time = ... / N runs" plus one, as llama-server counts
  them: the last sampled token (end of generation, or the one that reached
  -n) is never evaluated.
- Finish reason: "stop" at llama.cpp's " [end of text]" or a stop string,
  "length" when -n or a full context ended it.

Also: a deadline for the whole run (on expiry the process is killed, a
retryable NETWORK_ERROR); a missing binary or model file is a clear
non-retryable NOT_FOUND; stdout is read as it is written; stderr goes to a
temporary file so a chatty model loader can never fill a pipe.
"""

from __future__ import annotations

import codecs
import os
import re
import selectors
import subprocess
import tempfile
import time
from typing import Any, Dict, Generator, Iterator, List, Optional, Tuple

from .base import ProviderResult, ProviderStream, Usage, check_answer, timed
from .error_handling import ErrorCategory, ProviderError, categorize, redact, truncated
from .params import llama_cli_args

DEFAULT_BINARY = "llama-completion"

# Printed by llama.cpp when the model ends its answer; not part of the answer.
END_MARKERS = (" [end of text]",)
# The closing performance line: the last thing a complete run logs
# (`llama_print_timings` in builds from before mid-2024).
_PERF_DONE_RE = re.compile(r"(?:llama_perf_context_print|llama_print_timings):\s+total time\s*=")
# What a chat-only llama-cli says to -no-cnv (then it waits for chat input).
_CHAT_ONLY_RE = re.compile(r"not supported by llama-cli|please use llama-completion", re.I)
# Lines worth classifying a failure from; the rest of stderr is load chatter
# ("llama_context: n_ctx = 4096" would otherwise read as a context error).
_ERROR_LINE_RE = re.compile(
    r"error|fail|too long|unable|abort|exceed|assert|out of memory|not supported|terminate", re.I)
# llama.cpp ran out of context while generating (no context shift): a "length" end.
_CONTEXT_FULL_RE = re.compile(r"context full", re.I)
_STDERR_POLL_S = 0.25
_STDERR_TAIL_CHARS = 2000
_LOAD_FAILURE_RE = re.compile(r"failed to load model|unable to load model|no such file|error loading model", re.I)
_ARGUMENT_RE = re.compile(r"invalid argument|unknown argument|error while handling argument", re.I)
# llama_perf_context_print: "prompt eval time = 1.0 ms / 5 tokens", "eval time = ... / 20 runs"
_PROMPT_TOKENS_RE = re.compile(r"prompt eval time\s*=.*?/\s*(\d+)\s+tokens")
_EVAL_TOKENS_RE = re.compile(r"(?<!prompt )eval time\s*=.*?/\s*(\d+)\s+(?:runs|tokens)")


class StopFilter:
    """Cuts streamed text at the first stop string, even one split across chunks.

    Holds back only a tail that could still grow into a stop string (and
    trailing newlines, which llama-cli appends to its output), so text
    reaches the caller as soon as it cannot be part of one.
    """

    def __init__(self, stops: List[str]):
        self.stops = [s for s in stops if s]
        self._buffer = ""
        self.stopped_on: Optional[str] = None

    def _partial_len(self) -> int:
        best = 0
        for stop in self.stops:
            for k in range(min(len(stop) - 1, len(self._buffer)), best, -1):
                if self._buffer.endswith(stop[:k]):
                    best = k
                    break
        return best

    def feed(self, text: str) -> str:
        if self.stopped_on is not None:
            return ""
        self._buffer += text
        hits = [(self._buffer.find(s), s) for s in self.stops if s in self._buffer]
        if hits:
            index, stop = min(hits)
            self.stopped_on = stop
            out, self._buffer = self._buffer[:index], ""
            return out
        cut = len(self._buffer) - self._partial_len()
        while cut > 0 and self._buffer[cut - 1] == "\n":
            cut -= 1
        out, self._buffer = self._buffer[:cut], self._buffer[cut:]
        return out

    def finish(self) -> str:
        """The held-back tail, less the newline(s) llama-cli ends its output with."""
        out, self._buffer = self._buffer, ""
        return out.rstrip("\n") if self.stopped_on is None else ""


class LlamaCLI:
    """One configured llama-cli: how to find the model and how to run it."""

    def __init__(
        self,
        *,
        provider: str,
        binary: List[str],
        model_path: Optional[str],
        models_dir: Optional[str],
        timeout_s: float,
        extra_args: List[str],
        default_max_tokens: int,
    ):
        self.provider = provider
        self.binary = binary
        self.model_path = model_path
        self.models_dir = models_dir
        self.timeout_s = timeout_s
        self.extra_args = extra_args
        self.default_max_tokens = default_max_tokens

    # --- building the command ----------------------------------------------

    def model_file(self, model: str) -> str:
        """The .gguf to load: `model` as a path, else in models_dir, else model_path."""
        candidates = []
        if model:
            candidates.append(model)
            if self.models_dir:
                base = os.path.join(self.models_dir, model)
                candidates += [base, base + ".gguf"]
        if self.model_path:
            candidates.append(self.model_path)
        for candidate in candidates:
            if os.path.isfile(candidate):
                return candidate
        raise ProviderError(
            f"llama.cpp model {model!r} not found: give a .gguf path, or set models_dir "
            f"(LLAMACPP_MODELS_DIR) or model_path (LLAMACPP_MODEL_PATH)",
            category=ErrorCategory.NOT_FOUND,
            provider=self.provider,
            retryable=False,
        )

    def command(self, model: str, prompt_file: str, parameters: Optional[Dict[str, Any]]) -> Tuple[List[str], List[str]]:
        """(argv, stop strings) for one run reading its prompt from `prompt_file`."""
        args, stops = llama_cli_args(parameters, self.provider, default_max_tokens=self.default_max_tokens)
        # -no-cnv: plain completion, even for a model with a chat template
        # (llama-completion would otherwise start a chat and wait on stdin);
        # --no-display-prompt: stdout carries the answer alone.
        argv = [*self.binary, "-m", self.model_file(model), "-f", prompt_file, "-no-cnv", "--no-display-prompt"]
        for stop in stops:
            argv += ["-r", stop]
        return argv + args + self.extra_args, stops

    # --- running it ------------------------------------------------------------

    def complete(self, model: str, prompt: str, parameters: Optional[Dict[str, Any]]) -> ProviderResult:
        stream = self.stream(model, prompt, parameters)
        for _ in stream:
            pass
        assert stream.result is not None
        return stream.result

    def stream(self, model: str, prompt: str, parameters: Optional[Dict[str, Any]]) -> ProviderStream:
        # Checked now, at the call, like a bad parameter; the run starts on iteration.
        self.command(model, os.devnull, parameters)
        return ProviderStream(self._run(model, prompt, parameters))

    def _spawn(self, argv: List[str], stderr: Any) -> subprocess.Popen:
        try:
            return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr)
        except (FileNotFoundError, PermissionError, NotADirectoryError) as exc:
            raise ProviderError(
                f"llama.cpp binary {self.binary[0]!r} cannot be run ({type(exc).__name__}): "
                f"install llama.cpp or set LLAMACPP_BINARY / 'binary' in the provider configuration",
                category=ErrorCategory.NOT_FOUND,
                provider=self.provider,
                retryable=False,
            ) from None

    def _run(self, model: str, prompt: str, parameters: Optional[Dict[str, Any]]) -> Generator[str, None, ProviderResult]:
        elapsed_s = timed()
        deadline = time.monotonic() + self.timeout_s
        with tempfile.NamedTemporaryFile("w", encoding="utf-8", suffix=".txt") as prompt_file, \
                tempfile.TemporaryFile() as stderr_file:
            prompt_file.write(prompt)
            prompt_file.flush()
            argv, stops = self.command(model, prompt_file.name, parameters)
            proc = self._spawn(argv, stderr_file)
            try:
                text_filter = StopFilter(stops + list(END_MARKERS))
                parts: List[str] = []
                for piece in self._read_stdout(proc, deadline, stderr_file.fileno()):
                    if text_filter.stopped_on is not None:
                        continue  # past a stop: llama.cpp stops itself (-r); read on to its end
                    out = text_filter.feed(piece)
                    if out:
                        parts.append(out)
                        yield out
                tail = text_filter.finish()
                if tail:
                    parts.append(tail)
                    yield tail
                returncode = self._wait(proc, deadline)
                stderr_text = _read_all(stderr_file)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                if proc.stdout is not None:
                    proc.stdout.close()
        if returncode != 0:
            raise self._exit_error(returncode, stderr_text)
        if not _PERF_DONE_RE.search(stderr_text):
            raise truncated(
                self.provider,
                "run ended without llama.cpp's closing performance lines: its output may be cut short",
            )
        usage = _usage(stderr_text)
        limit = _max_tokens(argv)
        if text_filter.stopped_on is not None:
            finish_reason = "stop"
        elif _CONTEXT_FULL_RE.search(stderr_text) or (
                limit is not None and limit >= 0 and (usage.output_tokens or 0) >= limit):
            finish_reason = "length"
        else:
            finish_reason = "stop"
        return check_answer(ProviderResult(
            text="".join(parts),
            provider=self.provider,
            model=model,
            usage=usage,
            finish_reason=finish_reason,
            latency_s=elapsed_s(),
        ))

    def _read_stdout(self, proc: subprocess.Popen, deadline: float, stderr_fd: int) -> Iterator[str]:
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        stderr_seen = 0
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_READ)
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise self._timeout_error()
                ready = selector.select(min(remaining, _STDERR_POLL_S))
                # A chat-only llama-cli says so on stderr, then waits for chat
                # input forever: look for that while it runs, not at the end.
                stderr_seen = self._check_chat_only(stderr_fd, stderr_seen)
                if not ready:
                    continue  # the loop re-checks the deadline
                data = os.read(fd, 65536)
                if not data:
                    break
                text = decoder.decode(data)
                if text:
                    yield text
        tail = decoder.decode(b"", final=True)
        if tail:
            yield tail

    def _check_chat_only(self, stderr_fd: int, seen: int) -> int:
        """Raise if stderr (from byte `seen - 200` on) has the chat-only message; return the new size."""
        size = os.fstat(stderr_fd).st_size
        if size > seen:
            start = max(0, seen - 200)  # the message may straddle two polls
            text = os.pread(stderr_fd, size - start, start).decode("utf-8", errors="replace")
            if _CHAT_ONLY_RE.search(text):
                raise ProviderError(
                    f"llama.cpp binary {self.binary[-1]!r} is chat-only (current llama-cli); single-prompt "
                    f"completion is llama-completion: set LLAMACPP_BINARY / 'binary' to it",
                    category=ErrorCategory.NOT_FOUND,
                    provider=self.provider,
                    retryable=False,
                )
        return size

    def _wait(self, proc: subprocess.Popen, deadline: float) -> int:
        try:
            return proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            raise self._timeout_error() from None

    def _timeout_error(self) -> ProviderError:
        return ProviderError(
            f"llama.cpp run timed out after {self.timeout_s:g}s",
            category=ErrorCategory.NETWORK_ERROR,
            provider=self.provider,
            retryable=True,
        )

    def _exit_error(self, returncode: int, stderr_text: str) -> ProviderError:
        tail = redact(stderr_text[-_STDERR_TAIL_CHARS:].strip()) or None
        errors = "\n".join(line for line in stderr_text.splitlines() if _ERROR_LINE_RE.search(line))
        category = categorize(None, None, errors) if errors else ErrorCategory.UNKNOWN
        how = f"was killed by signal {-returncode}" if returncode < 0 else f"exited with status {returncode}"
        if category == ErrorCategory.UNKNOWN:
            if _CHAT_ONLY_RE.search(errors):
                category = ErrorCategory.NOT_FOUND
            elif _LOAD_FAILURE_RE.search(errors):
                category = ErrorCategory.NOT_FOUND
            elif _ARGUMENT_RE.search(errors):
                category = ErrorCategory.INVALID_REQUEST
            else:
                # The runner failed while generating (a decode error, a crash,
                # the OOM killer), or exited before its logger wrote why: what
                # Ollama reports as a retryable 500.
                category = ErrorCategory.SERVER_ERROR
                if not errors and returncode > 0:
                    how += " without an error message (llama.cpp's logger may have dropped it)"
        return ProviderError(
            f"llama.cpp {how}",
            category=category,
            provider=self.provider,
            provider_message=tail,
        )


def _read_all(handle: Any) -> str:
    handle.seek(0)
    return handle.read().decode("utf-8", errors="replace")


def _usage(stderr_text: str) -> Usage:
    prompt = _PROMPT_TOKENS_RE.findall(stderr_text)
    evals = _EVAL_TOKENS_RE.findall(stderr_text)
    # +1: the last sampled token is never evaluated, but llama-server counts it.
    return Usage(int(prompt[-1]) if prompt else None, int(evals[-1]) + 1 if evals else None)


def _max_tokens(argv: List[str]) -> Optional[int]:
    """The last -n / --n-predict value in argv (extra args may override ours)."""
    value = None
    for flag, arg in zip(argv, argv[1:]):
        if flag in ("-n", "--n-predict", "--predict"):
            try:
                value = int(arg)
            except ValueError:
                pass
    return value
