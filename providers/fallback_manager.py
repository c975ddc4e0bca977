"""Fallback chains: try providers in order, each with its own model.

`FallbackChain([(name, provider), ...])` is the seed guide's API; an entry
may also carry a model, `(name, provider, model)` or `ChainEntry(...)`, so
each provider is asked for a model it actually serves (the seed sent one
model name to every provider). The model for an entry is: its own, else the
model passed to the call, else the provider's `default_model` config.

Rules, in order of importance:

- Health lives in a `HealthStore` (in-memory by default, Redis to share it
  across workers). Every attempt's outcome is recorded there; a provider
  whose circuit is open is skipped, and the skip is kept as that entry's
  attempt error (a `CircuitOpenError`) without counting as a new failure.
- When *every* entry is skipped for an open circuit the chain fails fast
  with `AllProvidersFailed` (its `retry_after` is the soonest reopening),
  instead of hammering providers that just failed; `try_when_all_open=True`
  tries them anyway.
- A failure moves on to the next entry: retrying is the queue's job (with a
  countdown). `max_retries` allows a few in-process retries of retryable
  errors on the same entry, waiting `backoff.retry_delay_s` (which honours
  `retry_after`); it is 0 by default.
- A stream falls back only while the failing provider has yielded nothing.
  Once a chunk has reached the caller, the failure is raised as is: two
  providers' answers are never spliced together.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, Generator, Iterable, Iterator, List, Optional, Tuple, TypeGuard, Union

from .backoff import retry_delay_s
from .base import ProviderResult, ProviderStream
from .error_handling import ErrorCategory, ProviderError
from .health import (
    CircuitOpenError,
    CircuitState,
    HealthSnapshot,
    HealthStore,
    InMemoryHealthStore,
    ProviderHealth,
    error_message,
)

logger = logging.getLogger(__name__)


class AllProvidersFailed(RuntimeError):
    """Every entry of a chain failed or was skipped.

    `errors` is one `(provider name, exception)` per attempt, in order.
    `all_circuits_open` is True when nothing was even tried; `retry_after`
    then says when the first circuit lets a probe through.
    """

    def __init__(self, errors: List[Tuple[str, BaseException]], *, all_circuits_open: bool = False):
        self.errors = errors
        self.all_circuits_open = all_circuits_open
        waits = [e.retry_after for _, e in errors if isinstance(e, ProviderError) and e.retry_after is not None]
        self.retry_after: Optional[float] = min(waits) if all_circuits_open and waits else None
        what = "all circuits open" if all_circuits_open else "all providers failed"
        detail = "; ".join(f"{name}: {exc}" for name, exc in errors) or "no providers configured"
        super().__init__(f"{what}: {detail}")

    def __reduce__(self):
        # The default would call __init__(message); rebuild from the attempts instead.
        return (_rebuild_all_failed, (self.errors, self.all_circuits_open))

    def to_dict(self) -> Dict[str, Any]:
        """JSON-safe: one record per attempt, for job records and logs."""
        attempts = []
        for name, exc in self.errors:
            if isinstance(exc, ProviderError):
                attempts.append({"name": name, **exc.to_dict()})
            else:
                attempts.append({"name": name, "message": error_message(exc), "category": "unknown"})
        return {"message": str(self), "all_circuits_open": self.all_circuits_open,
                "retry_after_s": self.retry_after, "attempts": attempts}


def _rebuild_all_failed(errors: List[Tuple[str, BaseException]], all_circuits_open: bool) -> AllProvidersFailed:
    return AllProvidersFailed(errors, all_circuits_open=all_circuits_open)


@dataclass(frozen=True)
class ChainEntry:
    """One step of a chain: a provider, the name health is kept under, a model."""

    name: str
    provider: Any
    model: Optional[str] = None

    def model_for(self, requested: Optional[str]) -> str:
        model = self.model or requested
        if not model:
            config = getattr(self.provider, "config", None)
            model = config.get("default_model") if isinstance(config, dict) else None
        if not model:
            raise ProviderError(
                f"no model for {self.name}: name one in the chain, the call, or its default_model",
                category=ErrorCategory.INVALID_REQUEST,
                provider=self.name,
                retryable=False,
            )
        return model


EntryLike = Union[ChainEntry, Tuple[str, Any], Tuple[str, Any, Optional[str]]]


def _entry(item: EntryLike) -> ChainEntry:
    if isinstance(item, ChainEntry):
        return item
    if isinstance(item, tuple) and len(item) in (2, 3):
        return ChainEntry(*item)
    raise TypeError(f"a chain entry is (name, provider[, model]), not {item!r}")


class ProviderStatus:
    """The seed's per-provider status object, now a view on the health store."""

    def __init__(self, name: str, store: Optional[HealthStore] = None):
        self.name = name
        self.store = store or InMemoryHealthStore()

    def snapshot(self) -> HealthSnapshot:
        return self.store.snapshot(self.name)

    @property
    def health(self) -> ProviderHealth:
        return self.snapshot().state

    @property
    def circuit(self) -> CircuitState:
        return self.snapshot().circuit

    @property
    def error_count(self) -> int:
        return self.snapshot().failures

    @property
    def success_count(self) -> int:
        return self.snapshot().successes

    def mark_success(self, latency_s: Optional[float] = None) -> None:
        self.store.record_success(self.name, latency_s)

    def mark_failure(self, error: Any = None) -> None:
        self.store.record_failure(self.name, error if error is not None else ErrorCategory.UNKNOWN)


class FallbackChain:
    """Execute with fallback through multiple providers."""

    def __init__(
        self,
        providers: Iterable[EntryLike],
        *,
        health_store: Optional[HealthStore] = None,
        max_retries: int = 0,
        retry_cap_s: float = 30.0,
        try_when_all_open: bool = False,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.entries: List[ChainEntry] = [_entry(item) for item in providers]
        self.health = health_store or InMemoryHealthStore()
        self.max_retries = max(0, int(max_retries))
        self.retry_cap_s = retry_cap_s
        self.try_when_all_open = try_when_all_open
        self._sleep = sleep
        self.status: Dict[str, ProviderStatus] = {
            entry.name: ProviderStatus(entry.name, self.health) for entry in self.entries
        }

    @property
    def providers(self) -> List[Tuple[str, Any]]:
        """The seed's `(name, provider)` list."""
        return [(entry.name, entry.provider) for entry in self.entries]

    # --- non-streamed ---------------------------------------------------------

    def execute(
        self,
        model: Optional[str],
        prompt: str,
        system_prompt: Optional[str] = None,
        parameters: Optional[Dict[str, Any]] = None,
    ) -> str:
        """The seed's call: the first successful provider's text."""
        return self._run(lambda e, m: e.provider.execute(m, prompt, system_prompt, parameters), model)

    def complete(
        self,
        model: Optional[str],
        prompt: Optional[str] = None,
        system_prompt: Optional[str] = None,
        parameters: Optional[Dict[str, Any]] = None,
        *,
        messages: Optional[List[Dict[str, Any]]] = None,
    ) -> ProviderResult:
        """Like `execute`, returning the `ProviderResult` (who answered, usage)."""
        kwargs = {"messages": messages} if messages is not None else {}
        return self._run(
            lambda e, m: e.provider.complete(m, prompt, system_prompt, parameters, **kwargs), model
        )

    def _run(self, call: Callable[[ChainEntry, str], Any], model: Optional[str]) -> Any:
        errors: List[Tuple[str, BaseException]] = []
        for entry, attempt in self._attempts(errors):
            started = time.monotonic()
            try:
                result = call(entry, entry.model_for(model))
            except Exception as exc:  # every failure, classified or not, moves the chain on
                self.health.record_failure(entry.name, exc)
                self._failed(errors, entry, exc, attempt, "provider %s failed (attempt %d): %r")
                continue
            self.health.record_success(entry.name, time.monotonic() - started)
            return result
        raise self._failure(errors)

    # --- streamed -------------------------------------------------------------

    def stream_execute(
        self,
        model: Optional[str],
        prompt: str,
        system_prompt: Optional[str] = None,
        parameters: Optional[Dict[str, Any]] = None,
    ) -> Iterator[str]:
        """The seed's streamed call: text chunks from the one provider that answers."""

        def open_stream(entry: ChainEntry, m: str) -> Iterator[str]:
            return iter(entry.provider.stream_execute(m, prompt, system_prompt, parameters))

        result = yield from self._stream(open_stream, model)
        return result

    def stream(
        self,
        model: Optional[str],
        prompt: Optional[str] = None,
        system_prompt: Optional[str] = None,
        parameters: Optional[Dict[str, Any]] = None,
        *,
        messages: Optional[List[Dict[str, Any]]] = None,
    ) -> ProviderStream:
        """Streamed `complete`: iterate for text; `.result` is the answering provider's result."""
        kwargs = {"messages": messages} if messages is not None else {}

        def open_stream(entry: ChainEntry, m: str) -> Iterator[str]:
            return entry.provider.stream(m, prompt, system_prompt, parameters, **kwargs)

        return ProviderStream(self._stream(open_stream, model))

    def _stream(
        self, open_stream: Callable[[ChainEntry, str], Iterator[str]], model: Optional[str]
    ) -> Generator[str, None, Optional[ProviderResult]]:
        errors: List[Tuple[str, BaseException]] = []
        for entry, attempt in self._attempts(errors):
            started = time.monotonic()
            yielded = False
            chunks: Optional[Iterator[str]] = None
            try:
                chunks = open_stream(entry, entry.model_for(model))
                for chunk in chunks:
                    yielded = True
                    yield chunk
            except Exception as exc:
                self.health.record_failure(entry.name, exc)
                if yielded:
                    # The caller already holds part of this answer; another
                    # provider's text must not be appended to it.
                    logger.warning("provider %s failed mid-stream: %r", entry.name, exc)
                    raise
                self._failed(errors, entry, exc, attempt, "provider %s failed before streaming (attempt %d): %r")
                continue
            finally:
                close = getattr(chunks, "close", None)
                if callable(close):
                    close()
            self.health.record_success(entry.name, time.monotonic() - started)
            return getattr(chunks, "result", None)
        raise self._failure(errors)

    # --- shared ---------------------------------------------------------------

    def _admitted(self, errors: List[Tuple[str, BaseException]]) -> Iterator[Tuple[ChainEntry, bool]]:
        """Entries whose circuit lets a call through, recording the skipped ones.

        Yields (entry, bypass): bypass is True for the all-open fallback pass,
        where circuits are deliberately ignored.
        """
        skipped: List[ChainEntry] = []
        for entry in self.entries:
            if self.health.allow_request(entry.name):
                yield entry, False
            else:
                errors.append((entry.name, self.health.circuit_open_error(entry.name)))
                skipped.append(entry)
        if skipped and len(skipped) == len(self.entries) and self.try_when_all_open:
            logger.warning("every circuit is open; trying the chain anyway")
            for entry in skipped:
                yield entry, True

    def _attempts(self, errors: List[Tuple[str, BaseException]]) -> Iterator[Tuple[ChainEntry, int]]:
        """Every (entry, attempt number) to try, in order; skips go to `errors`.

        The caller stops at a success and reports each failure with `_failed`
        before taking the next pair: the same entry again only while a retry
        is due and its circuit still admits it.
        """
        for entry, bypass in self._admitted(errors):
            for attempt in range(1, self.max_retries + 2):
                if attempt > 1 and not bypass and not self.health.allow_request(entry.name):
                    errors.append((entry.name, self.health.circuit_open_error(entry.name)))
                    break
                yield entry, attempt
                if not self._retry_due(errors[-1][1], attempt):
                    break

    def _failed(self, errors: List[Tuple[str, BaseException]], entry: ChainEntry, exc: BaseException,
                attempt: int, log: str) -> None:
        """Record a failed attempt; sleep first when the same entry is retried."""
        errors.append((entry.name, exc))
        logger.warning(log, entry.name, attempt, exc)
        if self._retry_due(exc, attempt):
            self._sleep(retry_delay_s(exc, attempt, cap_s=self.retry_cap_s))

    def _retry_due(self, exc: BaseException, attempt: int) -> TypeGuard[ProviderError]:
        """Whether a failed attempt is retried in-process on the same entry."""
        return attempt <= self.max_retries and isinstance(exc, ProviderError) and exc.retryable

    def _failure(self, errors: List[Tuple[str, BaseException]]) -> AllProvidersFailed:
        all_open = bool(errors) and not self.try_when_all_open and all(
            isinstance(exc, CircuitOpenError) for _, exc in errors
        )
        return AllProvidersFailed(errors, all_circuits_open=all_open)

    def get_status(self) -> Dict[str, Dict[str, Any]]:
        """Status of every provider in the chain: `health`, `errors`, `successes`, circuit..."""
        return {name: status.snapshot().to_dict() for name, status in self.status.items()}


__all__ = ["AllProvidersFailed", "ChainEntry", "FallbackChain", "ProviderHealth", "ProviderStatus"]
