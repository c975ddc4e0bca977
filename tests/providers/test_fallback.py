"""FallbackChain beyond the seed's tests: models per entry, circuits, streams, retries."""

from __future__ import annotations

import json
import pickle
from unittest.mock import Mock

import pytest

from promptq.providers.error_handling import ErrorCategory, ProviderError
from promptq.providers.fallback_manager import AllProvidersFailed, ChainEntry, FallbackChain, ProviderStatus
from promptq.providers.health import CircuitOpenError, CircuitState, InMemoryHealthStore, ProviderHealth
from promptq.providers.health_redis import RedisHealthStore
from promptq.providers.mock_provider import MockProvider

SERVER = ProviderError("down", category=ErrorCategory.SERVER_ERROR, provider="x")


def failing(error: Exception = SERVER) -> Mock:
    provider = Mock()
    provider.execute.side_effect = error
    provider.complete.side_effect = error
    provider.stream_execute.side_effect = error
    return provider


def answering(text: str = "ok") -> Mock:
    provider = Mock()
    provider.config = {}
    provider.execute.return_value = text
    provider.stream_execute.side_effect = lambda *a, **k: iter(text.split("|"))
    return provider


def mocks(*names: str) -> list:
    return [(name, MockProvider({"instance_name": name})) for name in names]


def test_each_entry_gets_its_own_model():
    a, b, c = failing(), answering(), answering()
    b.execute.side_effect = SERVER
    c.config = {"default_model": "c-default"}
    chain = FallbackChain([("a", a, "a-model"), ChainEntry("b", b), ("c", c)])
    assert chain.execute("asked", "hi") == "ok"
    assert a.execute.call_args.args[0] == "a-model"
    assert b.execute.call_args.args[0] == "asked"  # a bare entry takes the call's model
    chain = FallbackChain([("c", c)])
    chain.execute(None, "hi")
    assert c.execute.call_args.args[0] == "c-default"


def test_no_model_anywhere_is_an_invalid_request_attempt():
    chain = FallbackChain([("a", answering())])
    with pytest.raises(AllProvidersFailed) as caught:
        chain.execute(None, "hi")
    (name, error), = caught.value.errors
    assert name == "a" and error.category is ErrorCategory.INVALID_REQUEST


def test_all_failed_carries_every_attempt_in_order():
    boom = ValueError("bug")
    chain = FallbackChain([("a", failing()), ("b", failing(boom))])
    with pytest.raises(RuntimeError) as caught:
        chain.execute("m", "hi")
    assert isinstance(caught.value, AllProvidersFailed)
    assert caught.value.errors == [("a", SERVER), ("b", boom)]
    assert caught.value.all_circuits_open is False
    assert "a: down" in str(caught.value) and "b: bug" in str(caught.value)
    record = json.loads(json.dumps(caught.value.to_dict()))
    assert [(a["name"], a["category"]) for a in record["attempts"]] == [("a", "server"), ("b", "unknown")]
    copy = pickle.loads(pickle.dumps(caught.value))
    assert str(copy) == str(caught.value) and copy.errors[0][1].category is ErrorCategory.SERVER_ERROR


def test_open_circuit_is_skipped_and_recorded_without_counting(clock):
    store = InMemoryHealthStore(failure_threshold=1, cooldown_s=30, clock=clock)
    a, b = failing(), answering()
    chain = FallbackChain([("a", a), ("b", b)], health_store=store)
    assert chain.execute("m", "1") == "ok"
    assert store.snapshot("a").circuit is CircuitState.OPEN
    assert chain.execute("m", "2") == "ok"
    assert a.execute.call_count == 1  # skipped the second time
    assert store.snapshot("a").failures == 1
    b.execute.side_effect = SERVER
    with pytest.raises(AllProvidersFailed) as caught:
        chain.execute("m", "3")
    (skipped, skip_error), (tried, _) = caught.value.errors
    assert (skipped, tried) == ("a", "b")
    assert isinstance(skip_error, CircuitOpenError) and skip_error.retryable is False
    assert "circuit open" in str(caught.value)


def test_all_circuits_open_fails_fast_unless_told_to_try(clock):
    store = InMemoryHealthStore(failure_threshold=1, cooldown_s=30, clock=clock)
    a, b = failing(), failing()
    chain = FallbackChain([("a", a), ("b", b)], health_store=store)
    with pytest.raises(AllProvidersFailed):
        chain.execute("m", "hi")
    clock.advance(10)
    with pytest.raises(AllProvidersFailed) as caught:
        chain.execute("m", "hi")
    assert caught.value.all_circuits_open is True
    assert caught.value.retry_after == pytest.approx(20)
    assert (a.execute.call_count, b.execute.call_count) == (1, 1)

    b.execute.side_effect, b.execute.return_value = None, "b answers"
    eager = FallbackChain([("a", a), ("b", b)], health_store=store, try_when_all_open=True)
    assert eager.execute("m", "hi") == "b answers"
    assert store.snapshot("b").circuit is CircuitState.CLOSED


def test_half_open_probe_goes_through_the_chain_and_closes(clock):
    store = InMemoryHealthStore(failure_threshold=2, cooldown_s=30, clock=clock)
    a = failing()
    chain = FallbackChain([("a", a), ("b", answering())], health_store=store)
    chain.execute("m", "1")
    chain.execute("m", "2")
    assert store.snapshot("a").state is ProviderHealth.UNHEALTHY
    clock.advance(30)
    a.execute.side_effect, a.execute.return_value = None, "a is back"
    assert chain.execute("m", "probe") == "a is back"
    assert store.snapshot("a").circuit is CircuitState.CLOSED


def test_stream_falls_back_only_before_the_first_chunk():
    chain = FallbackChain(mocks("a", "b"))
    assert "".join(chain.stream_execute("m", "hi [[fault@a:drop:0]]")) == "mock reply to: hi"
    assert chain.get_status()["a"]["errors"] == 1

    received = []
    with pytest.raises(ProviderError) as caught:
        for chunk in chain.stream_execute("m", "one two [[fault@a:drop:2]]"):
            received.append(chunk)
    assert received == ["mock", " reply"]  # a's partial answer, nothing from b
    assert caught.value.category is ErrorCategory.NETWORK_ERROR
    assert chain.get_status()["b"]["successes"] == 1  # only the first stream


def test_seed_style_stream_with_mocks_never_splices():
    a = Mock()

    def half_then_fail(*args, **kwargs):
        yield "partial "
        raise SERVER

    a.stream_execute.side_effect = half_then_fail
    b = answering("b|answer")
    chain = FallbackChain([("a", a), ("b", b)])
    out = []
    with pytest.raises(ProviderError) as caught:
        for chunk in chain.stream_execute("m", "hi"):
            out.append(chunk)
    assert out == ["partial "] and caught.value is SERVER
    b.stream_execute.assert_not_called()


def test_rich_stream_and_complete_report_who_answered():
    chain = FallbackChain([("a", MockProvider({"instance_name": "a"}), "model-a"),
                           ("b", MockProvider({"instance_name": "b"}), "model-b")])
    stream = chain.stream(None, "x [[fault@a:overloaded]]")
    assert "".join(stream) == "mock reply to: x"
    assert (stream.result.provider, stream.result.model) == ("b", "model-b")
    result = chain.complete(None, messages=[{"role": "user", "content": "y [[fault@model-a:auth]]"}])
    assert (result.provider, result.model, result.text) == ("b", "model-b", "mock reply to: y")


def test_closing_a_stream_early_records_nothing():
    chain = FallbackChain(mocks("a"))
    stream = chain.stream_execute("m", "one two three")
    assert next(stream) == "mock"
    stream.close()
    status = chain.get_status()["a"]
    assert (status["errors"], status["successes"]) == (0, 0)


def test_in_process_retries_honour_retry_after():
    slept = []
    a = answering("a answers")
    a.execute.side_effect = [ProviderError("slow", category=ErrorCategory.RATE_LIMIT, retry_after=3), "a answers"]
    chain = FallbackChain([("a", a), ("b", answering())], max_retries=2, sleep=slept.append)
    assert chain.execute("m", "hi") == "a answers"
    assert len(slept) == 1 and 3 <= slept[0] <= 3.25

    slept.clear()
    fatal = failing(ProviderError("no", category=ErrorCategory.AUTH_ERROR))
    chain = FallbackChain([("a", fatal), ("b", answering("b"))], max_retries=2, sleep=slept.append)
    assert chain.execute("m", "hi") == "b" and slept == [] and fatal.execute.call_count == 1

    default = FallbackChain([("a", failing()), ("b", answering("b"))], sleep=slept.append)
    assert default.execute("m", "hi") == "b" and slept == []


def test_retries_stop_when_the_circuit_opens(clock):
    store = InMemoryHealthStore(failure_threshold=2, cooldown_s=30, clock=clock)
    a = failing()
    chain = FallbackChain([("a", a)], health_store=store, max_retries=5, sleep=lambda s: None)
    with pytest.raises(AllProvidersFailed) as caught:
        chain.execute("m", "hi")
    assert a.execute.call_count == 2
    assert isinstance(caught.value.errors[-1][1], CircuitOpenError)


def test_status_objects_keep_the_seed_api():
    chain = FallbackChain([("a", answering())])
    status = chain.status["a"]
    assert isinstance(status, ProviderStatus)
    status.mark_failure()
    assert status.health is ProviderHealth.DEGRADED and status.error_count == 1
    status.mark_success()
    assert status.success_count == 1
    assert set(chain.get_status()["a"]) >= {"health", "errors", "successes", "circuit"}
    assert chain.providers == [("a", chain.entries[0].provider)]


def test_two_workers_chains_share_a_redis_circuit(redis_client, clock):
    def worker_chain():
        store = RedisHealthStore(redis_client, failure_threshold=2, cooldown_s=60, clock=clock)
        return FallbackChain(mocks("a", "b"), health_store=store)

    first, second = worker_chain(), worker_chain()
    assert first.execute("m", "p1 [[fault@a:server]]") == "mock reply to: p1"
    assert second.execute("m", "p2 [[fault@a:server]]") == "mock reply to: p2"
    third = worker_chain()
    assert third.get_status()["a"]["circuit"] == "open"
    with pytest.raises(AllProvidersFailed) as caught:
        third.execute("m", "p3 [[fault@b:auth]]")
    assert [type(e).__name__ for _, e in caught.value.errors] == ["CircuitOpenError", "ProviderError"]
