"""What every provider is: the `LLMProvider` interface and its result types.

A provider turns (model, prompt or messages, parameters) into text. It offers
the seed guide's two calls, `execute() -> str` and `stream_execute()` yielding
text, on top of two richer ones every provider implements:

- `complete(...) -> ProviderResult`: text, token usage, finish reason, the
  model that answered and the latency.
- `stream(...) -> ProviderStream`: iterate it for text chunks; once it is
  exhausted, `.result` holds the same `ProviderResult`.

Every failure leaves a provider as a `ProviderError` (see error_handling).
This module knows nothing of HTTP; `http_base` adds the pooled session.
"""

from __future__ import annotations

import os
import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, Generator, Iterator, List, Optional

from .error_handling import ErrorCategory, ProviderError, redact, register_secret

Message = Dict[str, Any]


@dataclass
class Usage:
    """Token counts as the provider reported them (None when it did not)."""

    input_tokens: Optional[int] = None
    output_tokens: Optional[int] = None

    @property
    def total_tokens(self) -> Optional[int]:
        if self.input_tokens is None and self.output_tokens is None:
            return None
        return (self.input_tokens or 0) + (self.output_tokens or 0)

    def to_dict(self) -> Dict[str, Optional[int]]:
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "total_tokens": self.total_tokens,
        }


@dataclass
class ProviderResult:
    """One successful call: what was said, by whom, and what it cost.

    `refusal` is set when the model declined to answer (OpenAI's
    `message.refusal`, Anthropic's `stop_reason: "refusal"`); `text` then
    holds whatever it said before declining, often nothing, and
    `finish_reason` is "refusal". A refusal is an answer, not an error: it
    does not fail over (README, "Errors").
    """

    text: str
    provider: str
    model: str
    usage: Usage = field(default_factory=Usage)
    finish_reason: Optional[str] = None
    latency_s: float = 0.0
    refusal: Optional[str] = None
    #: The response's rate-limit headers (providers.rate_limit_info), for the
    #: queue's pacing; not part of the job's result.
    rate_limit_headers: Dict[str, str] = field(default_factory=dict, repr=False, compare=False)

    def to_dict(self) -> Dict[str, Any]:
        data = asdict(self)
        data.pop("rate_limit_headers", None)
        data["usage"] = self.usage.to_dict()
        return data


def check_answer(result: ProviderResult) -> ProviderResult:
    """Refuse a "success" that says nothing and gives no reason.

    Empty text with no refusal, no finish reason and no usage is what a body
    cut short or a gateway's placeholder looks like, never a real answer; it
    would otherwise be stored as a succeeded job with an empty result.
    """
    if (not result.text and result.refusal is None and result.finish_reason is None
            and result.usage.total_tokens is None):
        raise ProviderError(
            f"{result.provider} returned an empty answer with no finish reason and no usage",
            category=ErrorCategory.MALFORMED_RESPONSE,
            provider=result.provider,
            retryable=False,
        )
    return result


class ProviderStream:
    """An iterator of text chunks whose final `ProviderResult` is kept.

    Wraps a generator that yields str and *returns* the result, so providers
    write one natural generator and callers still get usage after streaming.
    With `batched=True` the generator yields lists of str instead: the
    pieces that arrived together (one socket read). Iterating gives pieces
    either way; `batches()` gives the lists, which a relay sends as one event.
    """

    def __init__(self, generator: Generator[Any, None, ProviderResult], *, batched: bool = False):
        self._generator = generator
        self._batched = batched
        self._pending: List[str] = []  # the current batch's pieces not yet returned, reversed
        self.result: Optional[ProviderResult] = None

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        if not self._batched:
            return self._next()
        while not self._pending:
            self._pending = self._next()[::-1]
        return self._pending.pop()

    def _next(self) -> Any:
        try:
            return next(self._generator)
        except StopIteration as stop:
            self.result = stop.value
            raise

    def batches(self) -> Iterator[List[str]]:
        """The pieces in lists of those that arrived together (one each when
        the provider cannot tell)."""
        if self._pending:
            pending, self._pending = self._pending[::-1], []
            yield pending
        while True:
            try:
                item = self._next()
            except StopIteration:
                return
            yield item if self._batched else [item]

    def close(self) -> None:
        """Stop early (closes the HTTP response behind the generator)."""
        self._generator.close()


def build_messages(
    prompt: Optional[str],
    system_prompt: Optional[str] = None,
    messages: Optional[List[Message]] = None,
) -> List[Message]:
    """The chat messages for a call: explicit `messages`, else a user prompt."""
    out: List[Message] = []
    if system_prompt:
        out.append({"role": "system", "content": system_prompt})
    if messages:
        out.extend(dict(m) for m in messages)
    elif prompt is not None:
        out.append({"role": "user", "content": prompt})
    if not any(m.get("role") != "system" for m in out):
        raise ProviderError(
            "a call needs a prompt or at least one non-system message",
            category=ErrorCategory.INVALID_REQUEST,
            retryable=False,
        )
    return out


def resolve_setting(config: Dict[str, Any], key: str, env_var: Optional[str], default: Any = None) -> Any:
    """A setting from the config dict, else the ecosystem's env var, else default."""
    value = config.get(key)
    if value not in (None, ""):
        return value
    if env_var:
        env = os.environ.get(env_var)
        if env not in (None, ""):
            return env
    return default


class LLMProvider(ABC):
    """Base class of every provider. Subclasses set the class attributes."""

    #: Registry name ("openai", "claude", ...); also the queue suffix.
    name: str = "provider"
    #: Human name used in error messages ("OpenAI").
    display_name: str = "Provider"
    #: Environment variable holding the key, or None when none is needed.
    key_env_var: Optional[str] = None
    needs_key: bool = False
    can_stream: bool = True

    def __init__(self, config: Optional[Dict[str, Any]] = None):
        self.config: Dict[str, Any] = dict(config or {})
        api_key = resolve_setting(self.config, "api_key", self.key_env_var)
        self._api_key: Optional[str] = api_key
        register_secret(api_key)
        # The key is not kept in `config`, so no repr or dump of it leaks it.
        self.config.pop("api_key", None)

    @property
    def has_key(self) -> bool:
        return bool(self._api_key)

    def require_key(self) -> str:
        if self.needs_key and not self._api_key:
            raise ProviderError(
                f"{self.display_name} has no API key: set {self.key_env_var} "
                f"or 'api_key' in the worker's provider configuration",
                category=ErrorCategory.AUTH_ERROR,
                provider=self.name,
                retryable=False,
                # This worker's configuration is wrong, not the provider:
                # callers keep it out of the provider's shared health.
                error_type="missing_key",
            )
        return self._api_key or ""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, key={'set' if self.has_key else 'unset'})"

    # --- the seed guide's API ----------------------------------------------

    def execute(
        self,
        model: str,
        prompt: str,
        system_prompt: Optional[str] = None,
        parameters: Optional[Dict[str, Any]] = None,
    ) -> str:
        return self.complete(model, prompt, system_prompt, parameters).text

    def stream_execute(
        self,
        model: str,
        prompt: str,
        system_prompt: Optional[str] = None,
        parameters: Optional[Dict[str, Any]] = None,
    ) -> Iterator[str]:
        yield from self.stream(model, prompt, system_prompt, parameters)

    def format_messages(self, prompt: str, system_prompt: Optional[str] = None) -> List[Message]:
        return build_messages(prompt, system_prompt)

    # --- what subclasses implement ------------------------------------------

    @abstractmethod
    def complete(
        self,
        model: str,
        prompt: Optional[str] = None,
        system_prompt: Optional[str] = None,
        parameters: Optional[Dict[str, Any]] = None,
        *,
        messages: Optional[List[Message]] = None,
    ) -> ProviderResult:
        """One non-streamed call."""

    @abstractmethod
    def stream(
        self,
        model: str,
        prompt: Optional[str] = None,
        system_prompt: Optional[str] = None,
        parameters: Optional[Dict[str, Any]] = None,
        *,
        messages: Optional[List[Message]] = None,
    ) -> ProviderStream:
        """One streamed call."""

    def close(self) -> None:
        """Release pooled connections (a no-op for providers without any)."""


def timed(clock: Callable[[], float] = time.monotonic) -> Callable[[], float]:
    """Returns a function giving seconds since this call: latency measurement."""
    start = clock()
    return lambda: clock() - start


__all__ = [
    "LLMProvider",
    "Message",
    "ProviderResult",
    "ProviderStream",
    "Usage",
    "build_messages",
    "check_answer",
    "redact",
    "resolve_setting",
    "timed",
]
