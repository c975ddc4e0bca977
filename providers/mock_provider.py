"""A deterministic provider for demos, load tests and the embedded default.

No key, no network. The reply is derived from the prompt (by default
``"mock reply to: <prompt>"``), streamed in word chunks; usage counts words.
Failures are injected on purpose and raised as the same `ProviderError`s
(category, status, retryable) a real provider raises.

Config::

    instance_name  name in results and errors, and a fault scope (default "mock")
    reply          template; {prompt}, {model} and {name} are substituted
    latency_s      wait before the first output          (default 0)
    chunk_delay_s  wait between streamed chunks           (default 0)
    chunk_size     words per streamed chunk               (default 1)
    chunks         stream in this many chunks instead (overrides chunk_size)
    fault          a fault spec raised on every call: "auth" = always broken
    faults         a list of specs, one per call *of the same prompt*:
                   ["rate_limit", "server"] fails calls 1 and 2, then succeeds
    state_url      where per-prompt call counters live, so "fail N times then
                   succeed" holds across worker processes: "redis://..." or a
                   directory path; default: this process's memory
    state_prefix   key prefix of those counters in Redis (default "promptq";
                   a worker sets its own key_prefix)

Directives in the prompt, system prompt or messages (stripped from the reply)::

    [[fault:KIND]]               always fail with KIND
    [[fault:KIND:ARG:...]]       ARGs: a number (retry_after seconds; for
                                 `drop`, chunks streamed before the cut),
                                 retry_after=S, once, times=N
    [[fault@SCOPE:KIND...]]      only when SCOPE is this instance's name or
                                 the requested model ("mock:flaky" targets)
    [[fail_times:N]]             = [[fault:server:times=N]]; [[fail_times:N:KIND]]

KIND is a category value (auth, rate_limit, not_found, invalid, server,
network, unknown, context_length, content_filter, quota, overloaded,
malformed_response), `timeout` (= network) or `drop` (stream N chunks, then a
retryable NETWORK_ERROR; without streaming, a network error at once).

So, for the queue: succeed = a plain prompt; a retry = ``[[fail_times:1]]``
(the first call fails retryably, the retry succeeds; share `state_url`
between workers); a failover = ``[[fault@flaky:auth]]`` with targets
``["mock:flaky", "mock:good"]``. Counters are keyed by instance, model,
directive and the full prompt text, so give each such job its own prompt.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import threading
import time
from typing import Any, Callable, Dict, Generator, List, Optional, Sequence

from .abort import abortable_sleep
from .base import LLMProvider, Message, ProviderResult, ProviderStream, Usage, build_messages
from .error_handling import RETRYABLE_CATEGORIES, ErrorCategory, ProviderError, truncated
from .params import validate

DIRECTIVE_RE = re.compile(r"\[\[(fault|fail_times)(?:@([^:\]]+))?:([^\]]*)\]\]")
DEFAULT_REPLY = "mock reply to: {prompt}"
_KIND_ALIASES = {"timeout": "network", "invalid_request": "invalid", "quota_exhausted": "quota"}
# What a real API answers with for each category, so mock errors look real.
_STATUS = {
    ErrorCategory.AUTH_ERROR: 401,
    ErrorCategory.RATE_LIMIT: 429,
    ErrorCategory.NOT_FOUND: 404,
    ErrorCategory.INVALID_REQUEST: 400,
    ErrorCategory.SERVER_ERROR: 500,
    ErrorCategory.CONTEXT_LENGTH: 400,
    ErrorCategory.CONTENT_FILTER: 400,
    ErrorCategory.QUOTA_EXHAUSTED: 429,
    ErrorCategory.OVERLOADED: 529,
}


class Fault:
    """One parsed fault spec: what to raise, and how often."""

    def __init__(self, spec: str, scope: Optional[str] = None, provider: str = "mock"):
        kind, *args = [part.strip() for part in spec.split(":")]
        kind = _KIND_ALIASES.get(kind.lower(), kind.lower())
        self.spec, self.scope, self.drop = spec, scope, kind == "drop"
        self.times: Optional[int] = None
        self.retry_after: Optional[float] = None
        self.drop_after = 0
        try:
            self.category = ErrorCategory.NETWORK_ERROR if self.drop else ErrorCategory(kind)
            for arg in filter(None, args):
                if arg == "once":
                    self.times = 1
                elif arg.startswith("times="):
                    self.times = int(arg[6:])
                elif arg.startswith("retry_after="):
                    self.retry_after = float(arg[12:])
                elif self.drop:
                    self.drop_after = int(arg)
                else:
                    self.retry_after = float(arg)
        except ValueError:
            raise ProviderError(
                f"{provider}: bad fault directive {spec!r}",
                category=ErrorCategory.INVALID_REQUEST,
                provider=provider,
                retryable=False,
            ) from None

    def error(self, provider: str) -> ProviderError:
        if self.drop:
            return truncated(provider, "connection dropped mid-response (injected)")
        retryable = self.category in RETRYABLE_CATEGORIES
        return ProviderError(
            f"{provider} injected fault: {self.category.value}",
            category=self.category,
            status_code=_STATUS.get(self.category),
            provider=provider,
            retryable=retryable,
            retry_after=self.retry_after if retryable else None,
            provider_message=f"mock fault {self.spec!r}",
            error_type="injected_fault",
        )


# --- call counters -------------------------------------------------------------


class _MemoryCounter:
    def __init__(self) -> None:
        self._counts: Dict[str, int] = {}
        self._lock = threading.Lock()

    def incr(self, key: str) -> int:
        with self._lock:
            self._counts[key] = self._counts.get(key, 0) + 1
            return self._counts[key]

    def clear(self) -> None:
        with self._lock:
            self._counts.clear()


class _FileCounter:
    """One file per key under a directory, incremented under flock."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        os.makedirs(directory, exist_ok=True)

    def incr(self, key: str) -> int:
        fd = os.open(os.path.join(self.directory, f"{key}.count"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            raw = os.read(fd, 32)
            count = int(raw or b"0") + 1
            os.lseek(fd, 0, os.SEEK_SET)
            os.ftruncate(fd, 0)
            os.write(fd, str(count).encode())
            return count
        finally:
            os.close(fd)  # closing releases the lock


class _RedisCounter:
    TTL_S = 24 * 3600

    def __init__(self, url: str, prefix: str = "promptq") -> None:
        import redis  # only when asked for: the mock itself needs no Redis

        self.client = redis.Redis.from_url(url)
        self.prefix = prefix

    def incr(self, key: str) -> int:
        pipe = self.client.pipeline(transaction=True)
        pipe.incr(f"{self.prefix}:mock:calls:{key}")
        pipe.expire(f"{self.prefix}:mock:calls:{key}", self.TTL_S)
        return int(pipe.execute()[0])


_MEMORY = _MemoryCounter()


def reset_fault_counters() -> None:
    """Forget this process's in-memory call counts (tests, demos)."""
    _MEMORY.clear()


def _counter(state_url: Optional[str], prefix: Optional[str] = None) -> Any:
    if not state_url:
        return _MEMORY
    if state_url.startswith(("redis://", "rediss://", "unix://")):
        return _RedisCounter(state_url, prefix or "promptq")
    return _FileCounter(state_url[7:] if state_url.startswith("file://") else state_url)


# --- the provider ----------------------------------------------------------------


def _spec_list(value: Any) -> List[str]:
    """`faults` as a list; a config file or env var may give "rate_limit,server"."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",")]
    return [str(part).strip() if part is not None else "" for part in value or []]


def _content_text(message: Message) -> str:
    content = message.get("content")
    if isinstance(content, list):  # multimodal parts: keep the text ones
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


class MockProvider(LLMProvider):
    """The deterministic mock; see the module docstring for config and directives."""

    name = "mock"
    display_name = "Mock"
    needs_key = False

    def __init__(self, config: Optional[Dict[str, Any]] = None, *, sleep: Callable[[float], None] = abortable_sleep):
        super().__init__(config)
        self.instance_name = str(self.config.get("instance_name") or "mock")
        self.reply = str(self.config.get("reply") or DEFAULT_REPLY)
        self.latency_s = float(self.config.get("latency_s") or 0.0)
        self.chunk_delay_s = float(self.config.get("chunk_delay_s") or 0.0)
        self.chunk_size = max(1, int(self.config.get("chunk_size") or 1))
        self.chunks = int(self.config["chunks"]) if self.config.get("chunks") else None
        always = self.config.get("fault")
        self.fault = Fault(always, provider=self.instance_name) if always else None
        self.faults: List[Optional[Fault]] = [
            Fault(s, provider=self.instance_name) if s and s != "ok" else None
            for s in _spec_list(self.config.get("faults"))
        ]
        self._counter = _counter(self.config.get("state_url"), self.config.get("state_prefix"))
        self._sleep = sleep

    # --- faults -------------------------------------------------------------

    def _count(self, *parts: str) -> int:
        digest = hashlib.sha256("\x1f".join((self.instance_name,) + parts).encode()).hexdigest()[:32]
        return self._counter.incr(digest)

    def _active_fault(self, model: str, text: str) -> Optional[Fault]:
        """The fault this call suffers, if any; counts the call where that matters."""
        for index, match in enumerate(DIRECTIVE_RE.finditer(text)):
            verb, scope, body = match.groups()
            if scope and scope not in (self.instance_name, model):
                continue
            if verb == "fail_times":
                times, _, kind = body.partition(":")
                fault = Fault(f"{kind or 'server'}:times={times}", scope, self.instance_name)
            else:
                fault = Fault(body, scope, self.instance_name)
            if fault.times is None or self._count(model, str(index), text) <= fault.times:
                return fault
        if self.fault is not None:
            return self.fault
        if self.faults:
            call = self._count(model, "faults", text)
            if call <= len(self.faults):
                return self.faults[call - 1]
        return None

    # --- the answer -----------------------------------------------------------

    def _answer(
        self, model: str, prompt: Optional[str], system_prompt: Optional[str],
        parameters: Optional[Dict[str, Any]], messages: Optional[List[Message]],
    ) -> tuple:
        msgs = build_messages(prompt, system_prompt, messages)
        params = validate(parameters, self.instance_name)
        raw = "\n".join(_content_text(m) for m in msgs)
        fault = self._active_fault(model, raw)
        last_user = next((m for m in reversed(msgs) if m.get("role") != "system"), msgs[-1])
        asked = DIRECTIVE_RE.sub("", _content_text(last_user)).strip()
        text = self.reply.replace("{prompt}", asked).replace("{model}", model)
        text = text.replace("{name}", self.instance_name)
        finish = "stop"
        for stop in params.common.get("stop") or []:
            if stop and stop in text:
                text = text[: text.index(stop)]
        words = re.findall(r"\s*\S+|\s+$", text)
        max_tokens = params.common.get("max_tokens")
        if max_tokens is not None and len([w for w in words if w.strip()]) > max_tokens:
            words, finish = words[:max_tokens], "length"
            text = "".join(words)
        input_tokens = len(DIRECTIVE_RE.sub("", raw).split())
        usage = Usage(input_tokens=input_tokens, output_tokens=len(text.split()))
        return fault, text, words, usage, finish

    def _pieces(self, words: Sequence[str]) -> List[str]:
        if not words:
            return []
        size = self.chunk_size
        if self.chunks:
            size = max(1, -(-len(words) // self.chunks))  # ceil: at most `chunks` pieces
        return ["".join(words[i : i + size]) for i in range(0, len(words), size)]

    def complete(
        self,
        model: str,
        prompt: Optional[str] = None,
        system_prompt: Optional[str] = None,
        parameters: Optional[Dict[str, Any]] = None,
        *,
        messages: Optional[List[Message]] = None,
    ) -> ProviderResult:
        started = time.monotonic()
        model = model or "mock"
        fault, text, _, usage, finish = self._answer(model, prompt, system_prompt, parameters, messages)
        if self.latency_s:
            self._sleep(self.latency_s)
        if fault is not None:
            raise fault.error(self.instance_name)
        return ProviderResult(text, self.instance_name, model, usage, finish, time.monotonic() - started)

    def stream(
        self,
        model: str,
        prompt: Optional[str] = None,
        system_prompt: Optional[str] = None,
        parameters: Optional[Dict[str, Any]] = None,
        *,
        messages: Optional[List[Message]] = None,
    ) -> ProviderStream:
        return ProviderStream(self._generate(model or "mock", prompt, system_prompt, parameters, messages))

    def _generate(
        self, model: str, prompt: Optional[str], system_prompt: Optional[str],
        parameters: Optional[Dict[str, Any]], messages: Optional[List[Message]],
    ) -> Generator[str, None, ProviderResult]:
        started = time.monotonic()
        fault, text, words, usage, finish = self._answer(model, prompt, system_prompt, parameters, messages)
        if self.latency_s:
            self._sleep(self.latency_s)
        if fault is not None and not fault.drop:
            raise fault.error(self.instance_name)
        for index, piece in enumerate(self._pieces(words)):
            if fault is not None and index >= fault.drop_after:
                raise fault.error(self.instance_name)
            if index and self.chunk_delay_s:
                self._sleep(self.chunk_delay_s)
            yield piece
        if fault is not None:  # asked to drop after more chunks than the reply has
            raise fault.error(self.instance_name)
        return ProviderResult(text, self.instance_name, model, usage, finish, time.monotonic() - started)


__all__ = ["DEFAULT_REPLY", "DIRECTIVE_RE", "Fault", "MockProvider", "reset_fault_counters"]
