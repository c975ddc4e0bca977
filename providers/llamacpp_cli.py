"""Running `llama-cli` as a subprocess: the llama.cpp provider's "cli" mode.

What the seed guide's subprocess call lacked, handled here in one place:

- A deadline for the whole run; on expiry the process is killed and the call
  fails with a retryable NETWORK_ERROR (a stuck local model is a transient
  fault, like a hung server).
- A missing or non-executable binary, or a missing model file, is a clear
  non-retryable NOT_FOUND naming the setting that fixes it.
- A non-zero exit is classified from the tail of stderr (redacted, since
  argv and logs may echo anything) and keeps that tail as the provider message.
- Streaming reads stdout as it is written; stderr goes to a temporary file so
  a chatty model loader can never fill a pipe and stall the child.

The command is `llama-cli -m MODEL -p PROMPT -no-cnv --no-display-prompt -n N
[--temp ...]`: single-prompt completion mode. Recent llama.cpp builds moved
that mode to `llama-completion` (their `llama-cli` is chat-only); point
`binary` / LLAMACPP_BINARY at it there.
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

from .base import ProviderResult, ProviderStream, Usage, timed
from .error_handling import ErrorCategory, ProviderError, categorize, redact
from .params import llama_cli_args

# Printed by llama-cli when the model ends its answer; not part of the answer.
END_MARKERS = (" [end of text]",)
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

    def command(self, model: str, prompt: str, parameters: Optional[Dict[str, Any]]) -> Tuple[List[str], List[str]]:
        args, stops = llama_cli_args(parameters, self.provider, default_max_tokens=self.default_max_tokens)
        # -no-cnv: plain completion, no interactive chat loop waiting on stdin;
        # --no-display-prompt: stdout carries the answer alone.
        argv = [*self.binary, "-m", self.model_file(model), "-p", prompt, "-no-cnv", "--no-display-prompt"]
        return argv + args + self.extra_args, stops

    # --- running it ------------------------------------------------------------

    def complete(self, model: str, prompt: str, parameters: Optional[Dict[str, Any]]) -> ProviderResult:
        stream = self.stream(model, prompt, parameters)
        for _ in stream:
            pass
        assert stream.result is not None
        return stream.result

    def stream(self, model: str, prompt: str, parameters: Optional[Dict[str, Any]]) -> ProviderStream:
        argv, stops = self.command(model, prompt, parameters)
        return ProviderStream(self._run(argv, stops, model))

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

    def _run(self, argv: List[str], stops: List[str], model: str) -> Generator[str, None, ProviderResult]:
        elapsed_s = timed()
        deadline = time.monotonic() + self.timeout_s
        with tempfile.TemporaryFile() as stderr_file:
            proc = self._spawn(argv, stderr_file)
            try:
                text_filter = StopFilter(stops + list(END_MARKERS))
                parts: List[str] = []
                for piece in self._read_stdout(proc, deadline):
                    out = text_filter.feed(piece)
                    if out:
                        parts.append(out)
                        yield out
                    if text_filter.stopped_on is not None:
                        break
                tail = text_filter.finish()
                if tail:
                    parts.append(tail)
                    yield tail
                stopped = text_filter.stopped_on is not None
                killed = stopped and proc.poll() is None
                if killed:
                    proc.kill()  # past a stop string: the rest is not wanted
                returncode = self._wait(proc, deadline)
                stderr_text = _read_all(stderr_file)
                if returncode != 0 and not killed:
                    raise self._exit_error(returncode, stderr_text)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                if proc.stdout is not None:
                    proc.stdout.close()
        return ProviderResult(
            text="".join(parts),
            provider=self.provider,
            model=model,
            usage=_usage(stderr_text),
            finish_reason="stop",
            latency_s=elapsed_s(),
        )

    def _read_stdout(self, proc: subprocess.Popen, deadline: float) -> Iterator[str]:
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_READ)
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise self._timeout_error()
                if not selector.select(remaining):
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
        category = categorize(None, None, tail)
        if category == ErrorCategory.UNKNOWN:
            if tail and _LOAD_FAILURE_RE.search(tail):
                category = ErrorCategory.NOT_FOUND
            elif tail and _ARGUMENT_RE.search(tail):
                category = ErrorCategory.INVALID_REQUEST
            else:
                # The runner failed while generating (a decode error, a crash,
                # the OOM killer): what Ollama reports as a retryable 500.
                category = ErrorCategory.SERVER_ERROR
        how = f"was killed by signal {-returncode}" if returncode < 0 else f"exited with status {returncode}"
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
    return Usage(int(prompt[-1]) if prompt else None, int(evals[-1]) if evals else None)
