"""RedisHealthStore as workers use it: several processes' stores sharing one real Redis.

The shared behaviour (thresholds, half-open, categories) is covered for both
stores in test_health.py; this file covers what only a shared store has.
"""

from __future__ import annotations

import threading
import time

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from promptq.providers.error_handling import ErrorCategory, ProviderError
from promptq.providers.health import CircuitState, HealthPolicy, ProviderHealth
from promptq.providers.health_redis import RedisHealthStore
from tests.redis_server import free_port

POLICY = HealthPolicy(failure_threshold=3, cooldown_s=30.0, probe_timeout_s=10.0)
SERVER = ProviderError("down", category=ErrorCategory.SERVER_ERROR, provider="openai")


@pytest.fixture
def worker_store(redis_server, redis_client, clock):
    """A factory of stores, each with its own connection, as separate workers have."""
    clients = []

    def make(policy: HealthPolicy = POLICY, **kwargs):
        client = redis_server.client(**kwargs)
        clients.append(client)
        return RedisHealthStore(client, policy=policy, clock=clock)

    yield make
    for client in clients:
        client.close()


def test_two_workers_share_one_circuit(worker_store, clock):
    a, b = worker_store(), worker_store()
    a.record_failure("openai", SERVER)
    b.record_failure("openai", SERVER)
    assert a.snapshot("openai").consecutive_failures == 2
    a.record_failure("openai", SERVER)
    assert b.snapshot("openai").circuit is CircuitState.OPEN
    assert b.allow_request("openai") is False

    clock.advance(POLICY.cooldown_s)
    claims = [a.allow_request("openai"), b.allow_request("openai")]
    assert claims == [True, False]
    a.record_success("openai", latency_s=0.2)
    snap = b.snapshot("openai")
    assert (snap.state, snap.circuit) == (ProviderHealth.DEGRADED, CircuitState.CLOSED)
    assert b.allow_request("openai") is True


def test_state_outlives_the_store_object(worker_store):
    worker_store().record_failure("claude", SERVER)
    restarted = worker_store()
    snap = restarted.snapshot("claude")
    assert snap.failures == 1 and snap.errors_by_category == {"server": 1}
    assert list(restarted.all_snapshots()) == ["claude"]


def test_one_probe_among_many_workers(worker_store, clock):
    stores = [worker_store() for _ in range(12)]
    for _ in range(POLICY.failure_threshold):
        stores[0].record_failure("ollama", SERVER)
    clock.advance(POLICY.cooldown_s)
    barrier = threading.Barrier(len(stores))
    granted = []

    def claim(store):
        barrier.wait()
        granted.append(store.allow_request("ollama"))

    threads = [threading.Thread(target=claim, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert granted.count(True) == 1 and len(granted) == len(stores)


def test_probe_claim_is_a_key_that_expires(worker_store, redis_client, clock):
    store = worker_store(HealthPolicy(failure_threshold=1, cooldown_s=1.0, probe_timeout_s=0.2))
    store.record_failure("p", SERVER)
    clock.advance(1.0)
    assert store.allow_request("p") is True
    ttl_ms = redis_client.pttl("promptq:health:provider:p:probe")
    assert 0 < ttl_ms <= 200
    assert store.allow_request("p") is False
    # The prober "died": no report. Redis expires the claim on its own clock.
    deadline = time.monotonic() + 5
    while not store.allow_request("p"):
        assert time.monotonic() < deadline, "probe claim never expired"
        time.sleep(0.02)


def test_prefixes_isolate_deployments(redis_client, clock):
    one = RedisHealthStore(redis_client, prefix="one", policy=POLICY, clock=clock)
    two = RedisHealthStore(redis_client, prefix="two:", policy=POLICY, clock=clock)
    one.record_failure("p", SERVER)
    assert two.snapshot("p").failures == 0
    assert two.all_snapshots() == {}
    assert redis_client.exists("one:provider:p", "one:provider:p:errors") == 2
    assert redis_client.sismember("one:index", "p")


def test_works_with_decoded_responses(worker_store):
    store = worker_store(decode_responses=True)
    store.record_failure("p", ProviderError("x", category=ErrorCategory.RATE_LIMIT))
    store.record_success("p", latency_s=0.25)
    snap = store.snapshot("p")
    assert snap.errors_by_category == {"rate_limit": 1}
    assert snap.last_latency_s == pytest.approx(0.25)


def test_fails_open_when_redis_is_down(clock):
    # No client-side retries: redis-py's default backoff would only slow the test.
    client = redis.Redis(
        host="127.0.0.1", port=free_port(), socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0)
    )
    store = RedisHealthStore(client, policy=POLICY, clock=clock)
    assert store.allow_request("p") is True
    store.record_failure("p", SERVER)
    store.record_success("p", latency_s=0.1)
    with pytest.raises(redis.ConnectionError):
        store.snapshot("p")


def test_allow_request_queued_on_a_pipeline_answers_from_its_reply(worker_store, redis_client, clock):
    store = worker_store()
    pipe = redis_client.pipeline(transaction=False)
    pipe.ping()
    check = store.queue_allow_request("openai", pipe)
    _, reply = pipe.execute()
    assert check.answer(reply) is True  # never failed: closed, go
    for _ in range(POLICY.failure_threshold):
        store.record_failure("openai", SERVER)
    pipe = redis_client.pipeline(transaction=False)
    check = store.queue_allow_request("openai", pipe)
    assert check.answer(pipe.execute()[0]) is False  # open


def test_a_probe_claimed_for_a_call_not_made_is_given_back(worker_store, redis_client, clock):
    store, other = worker_store(), worker_store()
    for _ in range(POLICY.failure_threshold):
        store.record_failure("openai", SERVER)
    clock.advance(POLICY.cooldown_s)
    check = store.queue_allow_request("openai", store.redis)
    assert check.answer() is True  # half-open: this call holds the probe
    assert other.allow_request("openai") is False
    check.release()  # e.g. the delivery was dropped before any call
    assert other.allow_request("openai") is True


def test_releasing_a_closed_circuits_answer_touches_no_probe(worker_store, redis_client, clock):
    store = worker_store()
    check = store.queue_allow_request("openai", store.redis)
    assert check.answer() is True
    redis_client.set("promptq:health:provider:openai:probe", "someone-else")
    check.release()
    assert redis_client.get("promptq:health:provider:openai:probe") == b"someone-else"


def test_an_answer_says_whether_the_circuit_was_closed(worker_store, redis_client, clock):
    store = worker_store()
    assert store.queue_allow_request("openai", store.redis).closed  # never failed
    for _ in range(POLICY.failure_threshold):
        store.record_failure("openai", SERVER)
    assert not store.queue_allow_request("openai", store.redis).closed  # open: refused
    clock.advance(POLICY.cooldown_s)
    probe = store.queue_allow_request("openai", store.redis)
    assert probe.answer() and not probe.closed  # half-open: let through as the probe, not closed
    outage = store.queue_allow_request("openai", store.redis)
    outage.reply = redis.ConnectionError("down")
    assert outage.answer() and not outage.closed  # let through unchecked, not closed
