"""The health store contract, run against both stores (in-memory and a real Redis).

The clock is injected, so cooldowns and windows are crossed without sleeping.
"""

from __future__ import annotations

import threading

import pytest

from promptq.providers.error_handling import ErrorCategory, ProviderError
from promptq.providers.health import (
    NON_CIRCUIT_CATEGORIES,
    CircuitOpenError,
    CircuitState,
    HealthPolicy,
    InMemoryHealthStore,
    ProviderHealth,
)
from promptq.providers.health_redis import RedisHealthStore

POLICY = HealthPolicy(failure_threshold=3, cooldown_s=30.0, degraded_window_s=60.0, probe_timeout_s=10.0)


def err(category: ErrorCategory, message: str = "boom") -> ProviderError:
    return ProviderError(message, category=category, provider="p")


@pytest.fixture(params=["memory", "redis"])
def make_store(request, clock):
    def make(policy: HealthPolicy = POLICY):
        if request.param == "memory":
            return InMemoryHealthStore(policy, clock=clock)
        client = request.getfixturevalue("redis_client")
        return RedisHealthStore(client, prefix="test:health", policy=policy, clock=clock)

    return make


@pytest.fixture
def store(make_store):
    return make_store()


def trip(store, provider: str = "p", n: int = POLICY.failure_threshold) -> None:
    for _ in range(n):
        store.record_failure(provider, err(ErrorCategory.SERVER_ERROR))


def test_unknown_provider_is_healthy_and_allowed(store):
    snap = store.snapshot("never-seen")
    assert (snap.state, snap.circuit) == (ProviderHealth.HEALTHY, CircuitState.CLOSED)
    assert (snap.successes, snap.failures, snap.consecutive_failures) == (0, 0, 0)
    assert snap.last_error is None
    assert store.allow_request("never-seen") is True


def test_one_failure_degrades_and_keeps_a_redacted_last_error(store, clock):
    store.record_failure("p", err(ErrorCategory.SERVER_ERROR, "upstream said: key sk-abcdefghijklmnop1234 bad"))
    snap = store.snapshot("p")
    assert snap.state is ProviderHealth.DEGRADED
    assert snap.circuit is CircuitState.CLOSED
    assert snap.consecutive_failures == 1
    assert snap.errors_by_category == {"server": 1}
    assert snap.last_error.category == "server"
    assert snap.last_error.at == clock.now
    assert "sk-abcdefghijklmnop1234" not in snap.last_error.message
    assert "[REDACTED]" in snap.last_error.message
    assert store.allow_request("p") is True


def test_success_resets_the_run_and_health_recovers_after_the_window(store, clock):
    store.record_failure("p", err(ErrorCategory.NETWORK_ERROR))
    store.record_success("p", latency_s=0.5)
    snap = store.snapshot("p")
    assert snap.consecutive_failures == 0
    assert snap.state is ProviderHealth.DEGRADED  # failed within the window
    clock.advance(POLICY.degraded_window_s + 1)
    assert store.snapshot("p").state is ProviderHealth.HEALTHY


def test_a_failing_last_call_stays_degraded_past_the_window(store, clock):
    store.record_failure("p", err(ErrorCategory.SERVER_ERROR))
    clock.advance(POLICY.degraded_window_s * 10)
    assert store.snapshot("p").state is ProviderHealth.DEGRADED


def test_threshold_opens_the_circuit(store, clock):
    trip(store, n=POLICY.failure_threshold - 1)
    assert store.snapshot("p").circuit is CircuitState.CLOSED
    store.record_failure("p", err(ErrorCategory.SERVER_ERROR))
    snap = store.snapshot("p")
    assert (snap.state, snap.circuit) == (ProviderHealth.UNHEALTHY, CircuitState.OPEN)
    assert snap.opened_at == clock.now
    assert snap.retry_at == clock.now + POLICY.cooldown_s
    assert store.allow_request("p") is False
    clock.advance(POLICY.cooldown_s - 0.5)
    assert store.allow_request("p") is False


def test_half_open_lets_exactly_one_probe_through(store, clock):
    trip(store)
    clock.advance(POLICY.cooldown_s)
    assert store.snapshot("p").circuit is CircuitState.HALF_OPEN
    assert store.allow_request("p") is True
    assert store.snapshot("p").probing is True
    assert [store.allow_request("p") for _ in range(5)] == [False] * 5


def test_probe_success_closes_the_circuit(store, clock):
    trip(store)
    clock.advance(POLICY.cooldown_s)
    assert store.allow_request("p")
    store.record_success("p")
    snap = store.snapshot("p")
    assert snap.circuit is CircuitState.CLOSED
    assert (snap.opened_at, snap.retry_at, snap.probing) == (None, None, False)
    assert all(store.allow_request("p") for _ in range(3))


def test_probe_failure_reopens_for_another_cooldown(store, clock):
    trip(store)
    clock.advance(POLICY.cooldown_s + 1)
    assert store.allow_request("p")
    store.record_failure("p", err(ErrorCategory.OVERLOADED))
    snap = store.snapshot("p")
    assert snap.circuit is CircuitState.OPEN
    assert snap.retry_at == clock.now + POLICY.cooldown_s
    assert store.allow_request("p") is False
    clock.advance(POLICY.cooldown_s)
    assert store.allow_request("p") is True  # a new probe after the new cooldown


def test_failure_of_an_in_flight_call_does_not_extend_the_cooldown(store, clock):
    trip(store)
    retry_at = store.snapshot("p").retry_at
    clock.advance(5)
    store.record_failure("p", err(ErrorCategory.SERVER_ERROR))
    assert store.snapshot("p").retry_at == retry_at


@pytest.mark.parametrize("category", sorted(NON_CIRCUIT_CATEGORIES, key=lambda c: c.value))
def test_callers_faults_never_open_the_circuit_nor_degrade(store, category):
    for _ in range(POLICY.failure_threshold * 3):
        store.record_failure("p", err(category))
    snap = store.snapshot("p")
    assert (snap.state, snap.circuit) == (ProviderHealth.HEALTHY, CircuitState.CLOSED)
    assert snap.errors_by_category == {category.value: POLICY.failure_threshold * 3}
    assert snap.failures == POLICY.failure_threshold * 3
    assert snap.last_error.category == category.value
    assert store.allow_request("p") is True


@pytest.mark.parametrize(
    "error",
    [
        err(ErrorCategory.SERVER_ERROR),
        err(ErrorCategory.NETWORK_ERROR),
        err(ErrorCategory.OVERLOADED),
        err(ErrorCategory.MALFORMED_RESPONSE),
        ValueError("a bug or an unclassified failure"),
    ],
    ids=lambda e: getattr(getattr(e, "category", None), "value", type(e).__name__),
)
def test_provider_faults_open_the_circuit(store, error):
    for _ in range(POLICY.failure_threshold):
        store.record_failure("p", error)
    assert store.snapshot("p").circuit is CircuitState.OPEN


@pytest.mark.parametrize("category", [ErrorCategory.RATE_LIMIT, ErrorCategory.AUTH_ERROR, ErrorCategory.QUOTA_EXHAUSTED])
def test_rate_limits_and_account_errors_never_open_the_circuit(store, category):
    # A burst of 429s from a healthy provider opened the shared circuit
    # (issue 8): only an endpoint that is broken may open one.
    for _ in range(POLICY.failure_threshold * 2):
        store.record_failure("p", err(category))
    assert store.snapshot("p").circuit is CircuitState.CLOSED
    assert store.allow_request("p") is True


def test_callers_faults_neither_break_nor_extend_a_run(store):
    trip(store, n=POLICY.failure_threshold - 1)
    store.record_failure("p", err(ErrorCategory.INVALID_REQUEST))
    assert store.snapshot("p").consecutive_failures == POLICY.failure_threshold - 1
    store.record_failure("p", err(ErrorCategory.SERVER_ERROR))
    assert store.snapshot("p").circuit is CircuitState.OPEN


def test_callers_fault_on_a_probe_frees_the_probe_slot(store, clock):
    trip(store)
    clock.advance(POLICY.cooldown_s)
    assert store.allow_request("p")
    store.record_failure("p", err(ErrorCategory.CONTENT_FILTER))
    assert store.snapshot("p").circuit is CircuitState.HALF_OPEN
    assert store.allow_request("p") is True


def test_counts_latency_and_listing(store):
    store.record_success("a", latency_s=1.0)
    store.record_success("a", latency_s=3.0)
    store.record_success("a")
    store.record_failure("b", err(ErrorCategory.RATE_LIMIT))
    snaps = store.all_snapshots()
    assert sorted(snaps) == ["a", "b"]
    assert snaps["a"].successes == 3
    assert snaps["a"].avg_latency_s == pytest.approx(2.0)
    assert snaps["a"].last_latency_s == pytest.approx(3.0)
    assert snaps["b"].errors_by_category == {"rate_limit": 1}
    store.reset("a")
    assert sorted(store.all_snapshots()) == ["b"]
    store.reset()
    assert store.all_snapshots() == {}


def test_snapshot_dict_keeps_the_seed_keys(store):
    store.record_failure("p", err(ErrorCategory.SERVER_ERROR))
    store.record_success("p")
    data = store.snapshot("p").to_dict()
    assert (data["health"], data["errors"], data["successes"]) == ("degraded", 1, 1)
    assert data["circuit"] == "closed"
    assert data["last_error"]["category"] == "server"


def test_circuit_open_error_says_why_and_when(store, clock):
    for _ in range(POLICY.failure_threshold):
        store.record_failure("p", err(ErrorCategory.OVERLOADED, "overloaded"))
    clock.advance(10)
    error = store.circuit_open_error("p")
    assert isinstance(error, CircuitOpenError) and isinstance(error, ProviderError)
    assert error.category is ErrorCategory.OVERLOADED
    assert error.retryable is False
    assert error.retry_after == pytest.approx(POLICY.cooldown_s - 10)
    assert error.error_type == "circuit_open"
    assert "circuit open" in str(error)


def test_concurrent_updates_are_not_lost_and_one_probe_wins(store, clock):
    def fail_many():
        for _ in range(50):
            store.record_failure("q", err(ErrorCategory.NETWORK_ERROR))

    threads = [threading.Thread(target=fail_many) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    snap = store.snapshot("q")
    assert snap.failures == 400 and snap.errors_by_category == {"network": 400}
    assert snap.circuit is CircuitState.OPEN

    clock.advance(POLICY.cooldown_s)
    barrier = threading.Barrier(16)
    granted = []

    def claim():
        barrier.wait()
        granted.append(store.allow_request("q"))

    threads = [threading.Thread(target=claim) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert granted.count(True) == 1 and len(granted) == 16


def test_in_memory_probe_claim_lapses_when_the_prober_never_reports(clock):
    store = InMemoryHealthStore(POLICY, clock=clock)
    trip(store)
    clock.advance(POLICY.cooldown_s)
    assert store.allow_request("p")
    clock.advance(POLICY.probe_timeout_s - 1)
    assert store.allow_request("p") is False
    clock.advance(1)
    assert store.allow_request("p") is True


def test_policy_is_validated_and_can_be_given_as_keywords(clock):
    with pytest.raises(ValueError):
        HealthPolicy(failure_threshold=0)
    with pytest.raises(ValueError):
        HealthPolicy(cooldown_s=-1)
    store = InMemoryHealthStore(failure_threshold=1, cooldown_s=5, clock=clock)
    store.record_failure("p", err(ErrorCategory.SERVER_ERROR))
    assert store.snapshot("p").circuit is CircuitState.OPEN
    with pytest.raises(TypeError):
        InMemoryHealthStore(POLICY, failure_threshold=2)
