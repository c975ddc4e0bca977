"""Provider health: a small store interface and the circuit breaker behind it.

Every call's outcome is reported to a `HealthStore`; before a call, the
caller asks `allow_request`. The store keeps, per provider, lifetime counts,
errors by category, the last error (redacted) and a circuit breaker::

            N consecutive circuit failures
    CLOSED ───────────────────────────────▶ OPEN ──── cooldown_s elapses ───┐
      ▲                                      ▲                              ▼
      │  any success                         │  the probe fails        HALF_OPEN
      └──────────────────────────────────────┴──────────────────────── (one probe
                                                                         let through)

- CLOSED lets every request through. OPEN refuses them until `retry_at`.
  Once the cooldown has elapsed the circuit is HALF_OPEN: `allow_request`
  hands out exactly one probe claim (an atomic claim that lapses after
  `probe_timeout_s`, in case the probing worker dies); every other caller is
  refused. A success closes the circuit; a failure reopens it for another
  cooldown.
- Health is derived from the same record: UNHEALTHY while the circuit is not
  closed; DEGRADED when the last call failed or a failure happened within
  `degraded_window_s`; otherwise HEALTHY. So one failure is already
  "degraded" (the seed guide's test asks exactly that), and a provider is
  only skipped once it has failed `failure_threshold` times in a row.

Which failures count. Only errors that say the endpoint is broken move the
breaker: server errors, network failures, overloaded, malformed responses
and unknown exceptions. Rate limits (a healthy provider asking us to wait),
auth and quota (the account's state), invalid requests, context-length
overruns, content-filter refusals and not-found (an unknown model: the
chain entry's fault) are counted by category but neither degrade health nor
open the circuit. Callers key a circuit by endpoint, e.g. "provider:model"
(see tasks.endpoints), so one failing model never closes its siblings.

`InMemoryHealthStore` serves one process; `health_redis.RedisHealthStore`
implements the same transitions in Lua so every worker shares them.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any, Callable, Dict, Optional

from .error_handling import ErrorCategory, ProviderError, redact

Clock = Callable[[], float]

#: Counted, but never held against the endpoint: the caller's fault (bad
#: request, unknown model, ...), the account's (auth, quota), or a provider
#: asking us to slow down. A burst of 429s from a healthy provider must not
#: open a circuit: that refuses calls it would have answered (issue 8).
NON_CIRCUIT_CATEGORIES = frozenset(
    {
        ErrorCategory.INVALID_REQUEST,
        ErrorCategory.CONTEXT_LENGTH,
        ErrorCategory.CONTENT_FILTER,
        ErrorCategory.NOT_FOUND,
        ErrorCategory.RATE_LIMIT,
        ErrorCategory.AUTH_ERROR,
        ErrorCategory.QUOTA_EXHAUSTED,
    }
)

MAX_ERROR_MESSAGE_CHARS = 300


class ProviderHealth(str, Enum):
    """A provider's health as operators see it."""

    HEALTHY = "healthy"
    DEGRADED = "degraded"
    UNHEALTHY = "unhealthy"


class CircuitState(str, Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


def error_category(error: Any) -> ErrorCategory:
    """The category of anything a call may have failed with."""
    if isinstance(error, ProviderError):
        return error.category
    if isinstance(error, ErrorCategory):
        return error
    return ErrorCategory.UNKNOWN


def counts_toward_circuit(category: ErrorCategory) -> bool:
    return category not in NON_CIRCUIT_CATEGORIES


def error_message(error: Any) -> str:
    """A short, redacted description of a failure, safe to store and show."""
    if isinstance(error, ProviderError):
        text = str(error)
    elif isinstance(error, BaseException):
        text = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    else:
        text = str(error)
    return redact(text)[:MAX_ERROR_MESSAGE_CHARS]


@dataclass(frozen=True)
class HealthPolicy:
    """The breaker's thresholds."""

    failure_threshold: int = 5
    cooldown_s: float = 30.0
    degraded_window_s: float = 60.0
    probe_timeout_s: float = 60.0

    def __post_init__(self) -> None:
        if self.failure_threshold < 1:
            raise ValueError(f"failure_threshold must be >= 1, not {self.failure_threshold!r}")
        for name in ("cooldown_s", "degraded_window_s", "probe_timeout_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, not {getattr(self, name)!r}")


@dataclass(frozen=True)
class LastError:
    category: str
    message: str
    at: float


@dataclass(frozen=True)
class HealthSnapshot:
    """One provider's health at one moment. Times are epoch seconds."""

    provider: str
    state: ProviderHealth = ProviderHealth.HEALTHY
    circuit: CircuitState = CircuitState.CLOSED
    consecutive_failures: int = 0
    successes: int = 0
    failures: int = 0
    errors_by_category: Dict[str, int] = field(default_factory=dict)
    last_error: Optional[LastError] = None
    last_success_at: Optional[float] = None
    last_failure_at: Optional[float] = None
    opened_at: Optional[float] = None
    retry_at: Optional[float] = None
    probing: bool = False
    avg_latency_s: Optional[float] = None
    last_latency_s: Optional[float] = None

    def to_dict(self) -> Dict[str, Any]:
        """JSON-safe; keeps the seed's keys `health`, `errors`, `successes`."""
        data = asdict(self)
        data["state"] = self.state.value
        data["circuit"] = self.circuit.value
        data["health"] = self.state.value
        data["errors"] = self.failures
        return data


@dataclass
class HealthRecord:
    """What a store persists per provider; both stores apply the same rules."""

    successes: int = 0
    failures: int = 0
    consecutive: int = 0
    errors_by_category: Dict[str, int] = field(default_factory=dict)
    last_error_category: Optional[str] = None
    last_error_message: Optional[str] = None
    last_error_at: Optional[float] = None
    last_success_at: Optional[float] = None
    last_failure_at: Optional[float] = None
    opened_at: Optional[float] = None
    retry_at: Optional[float] = None
    probe_until: Optional[float] = None
    latency_total_s: float = 0.0
    latency_count: int = 0
    last_latency_s: Optional[float] = None

    # --- transitions (mirrored by the Lua scripts in health_redis) ---------

    def apply_success(self, now: float, latency_s: Optional[float]) -> None:
        self.successes += 1
        self.consecutive = 0
        self.last_success_at = now
        # Any success is evidence the provider works: close whatever was open.
        self.opened_at = self.retry_at = self.probe_until = None
        if latency_s is not None:
            self.latency_total_s += latency_s
            self.latency_count += 1
            self.last_latency_s = latency_s

    def apply_failure(self, now: float, category: ErrorCategory, message: str, policy: HealthPolicy) -> None:
        self.failures += 1
        key = category.value
        self.errors_by_category[key] = self.errors_by_category.get(key, 0) + 1
        self.last_error_category, self.last_error_message, self.last_error_at = key, message, now
        half_open = self.retry_at is not None and now >= self.retry_at
        if not counts_toward_circuit(category):
            # The provider answered; only free the probe slot for the next caller.
            if half_open:
                self.probe_until = None
            return
        self.consecutive += 1
        self.last_failure_at = now
        if half_open or (self.retry_at is None and self.consecutive >= policy.failure_threshold):
            self.opened_at, self.retry_at = now, now + policy.cooldown_s
            self.probe_until = None
        # Still open within the cooldown: an in-flight call failing changes nothing.

    def try_claim_probe(self, now: float, policy: HealthPolicy) -> bool:
        if self.retry_at is None:
            return True
        if now < self.retry_at:
            return False
        if self.probe_until is not None and now < self.probe_until:
            return False
        self.probe_until = now + policy.probe_timeout_s
        return True


def derive_snapshot(
    provider: str, record: HealthRecord, policy: HealthPolicy, now: float, probing: bool
) -> HealthSnapshot:
    """The operator's view of a record at time `now`."""
    if record.retry_at is None:
        circuit = CircuitState.CLOSED
    elif now < record.retry_at:
        circuit = CircuitState.OPEN
    else:
        circuit = CircuitState.HALF_OPEN
    recent = record.last_failure_at is not None and now - record.last_failure_at < policy.degraded_window_s
    if circuit is not CircuitState.CLOSED:
        state = ProviderHealth.UNHEALTHY
    elif record.consecutive > 0 or recent:
        state = ProviderHealth.DEGRADED
    else:
        state = ProviderHealth.HEALTHY
    last_error = None
    if record.last_error_category is not None:
        last_error = LastError(
            record.last_error_category, record.last_error_message or "", record.last_error_at or 0.0
        )
    return HealthSnapshot(
        provider=provider,
        state=state,
        circuit=circuit,
        consecutive_failures=record.consecutive,
        successes=record.successes,
        failures=record.failures,
        errors_by_category=dict(record.errors_by_category),
        last_error=last_error,
        last_success_at=record.last_success_at,
        last_failure_at=record.last_failure_at,
        opened_at=record.opened_at,
        retry_at=record.retry_at,
        probing=probing and circuit is CircuitState.HALF_OPEN,
        avg_latency_s=(record.latency_total_s / record.latency_count) if record.latency_count else None,
        last_latency_s=record.last_latency_s,
    )


class CircuitOpenError(ProviderError):
    """A call refused because the provider's circuit is open.

    Not retryable on this provider (that is the point of the breaker): the
    caller fails over. `retry_after` says when a probe will be allowed. The
    category is that of the error that opened the circuit, so a job record
    still says *why* the provider was skipped; `error_type` is "circuit_open".
    """

    def __init__(self, snapshot: HealthSnapshot, now: float):
        self.snapshot = snapshot
        last = snapshot.last_error
        category = ErrorCategory(last.category) if last else ErrorCategory.UNKNOWN
        wait_s = max(0.0, snapshot.retry_at - now) if snapshot.retry_at is not None else None
        detail = "probe in flight" if snapshot.circuit is CircuitState.HALF_OPEN else (
            f"retry in {wait_s:.1f}s" if wait_s is not None else "open"
        )
        super().__init__(
            f"{snapshot.provider} skipped: circuit open ({detail})",
            category=category,
            provider=snapshot.provider,
            retryable=False,
            retry_after=wait_s,
            provider_message=last.message if last else None,
            error_type="circuit_open",
        )


class HealthStore(ABC):
    """Where call outcomes go and where the circuit breaker's answer comes from."""

    policy: HealthPolicy
    clock: Clock

    @abstractmethod
    def record_success(self, provider: str, latency_s: Optional[float] = None) -> None:
        """A call to `provider` succeeded (closes its circuit)."""

    @abstractmethod
    def record_failure(self, provider: str, error: Any) -> None:
        """A call failed with `error` (a ProviderError, any exception, or a category)."""

    @abstractmethod
    def allow_request(self, provider: str) -> bool:
        """May a call go to `provider` now? Claims the single half-open probe."""

    @abstractmethod
    def snapshot(self, provider: str) -> HealthSnapshot:
        """The provider's health now (all zeros for a provider never seen)."""

    @abstractmethod
    def all_snapshots(self) -> Dict[str, HealthSnapshot]:
        """Every provider this store has heard of."""

    @abstractmethod
    def reset(self, provider: Optional[str] = None) -> None:
        """Forget one provider's history, or every provider's."""

    def circuit_open_error(self, provider: str) -> CircuitOpenError:
        """The error to record for a call `allow_request` refused."""
        return CircuitOpenError(self.snapshot(provider), self.clock())


def _policy(policy: Optional[HealthPolicy], overrides: Dict[str, Any]) -> HealthPolicy:
    if policy is not None and overrides:
        raise TypeError("pass either a HealthPolicy or its fields, not both")
    return policy or HealthPolicy(**overrides)


class InMemoryHealthStore(HealthStore):
    """Health for one process, thread-safe. `clock` is injectable for tests."""

    def __init__(self, policy: Optional[HealthPolicy] = None, *, clock: Clock = time.time, **overrides: Any):
        self.policy = _policy(policy, overrides)
        self.clock = clock
        self._records: Dict[str, HealthRecord] = {}
        self._lock = threading.Lock()

    def _record(self, provider: str) -> HealthRecord:
        return self._records.setdefault(provider, HealthRecord())

    def record_success(self, provider: str, latency_s: Optional[float] = None) -> None:
        with self._lock:
            self._record(provider).apply_success(self.clock(), latency_s)

    def record_failure(self, provider: str, error: Any) -> None:
        category, message = error_category(error), error_message(error)
        with self._lock:
            self._record(provider).apply_failure(self.clock(), category, message, self.policy)

    def allow_request(self, provider: str) -> bool:
        with self._lock:
            record = self._records.get(provider)
            return record is None or record.try_claim_probe(self.clock(), self.policy)

    def _snapshot_locked(self, provider: str, now: float) -> HealthSnapshot:
        record = self._records.get(provider) or HealthRecord()
        probing = record.probe_until is not None and now < record.probe_until
        return derive_snapshot(provider, record, self.policy, now, probing)

    def snapshot(self, provider: str) -> HealthSnapshot:
        with self._lock:
            return self._snapshot_locked(provider, self.clock())

    def all_snapshots(self) -> Dict[str, HealthSnapshot]:
        with self._lock:
            now = self.clock()
            return {name: self._snapshot_locked(name, now) for name in sorted(self._records)}

    def reset(self, provider: Optional[str] = None) -> None:
        with self._lock:
            if provider is None:
                self._records.clear()
            else:
                self._records.pop(provider, None)


__all__ = [
    "CircuitOpenError",
    "CircuitState",
    "HealthPolicy",
    "HealthRecord",
    "HealthSnapshot",
    "HealthStore",
    "InMemoryHealthStore",
    "LastError",
    "NON_CIRCUIT_CATEGORIES",
    "ProviderHealth",
    "counts_toward_circuit",
    "derive_snapshot",
    "error_category",
    "error_message",
]
