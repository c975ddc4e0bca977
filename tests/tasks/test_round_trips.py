"""Job pipelines that are ready together share one round trip (tasks.round_trips), each caller
getting exactly its own replies; alone, a pipeline goes out at once."""

from __future__ import annotations

import threading
import time

import pytest
import redis

from promptq.tasks.round_trips import RoundTrips

INCR_BY = "return redis.call('INCRBY', KEYS[1], ARGV[1])"


def wait_until(predicate, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        time.sleep(0.005)


def test_a_lone_pipeline_goes_out_at_once_with_its_replies(redis_client):
    trips = RoundTrips(redis_client)
    incr = redis_client.register_script(INCR_BY)
    redis_client.script_load(INCR_BY)  # (a refused EVALSHA is sent again after the rest: tasks.pipeline)
    pipe = redis_client.pipeline(transaction=False)
    pipe.set("a", "1")
    incr(keys=["a"], args=[4], client=pipe)
    pipe.get("a")
    assert trips.execute(pipe) == [True, 5, b"5"]
    assert (trips.round_trips, trips.pipelines) == (1, 1)


def test_pipelines_ready_together_share_one_round_trip_and_keep_their_own_replies(redis_server, redis_client):
    trips = RoundTrips(redis.Redis.from_url(redis_server.url))
    incr = redis_client.register_script(INCR_BY)
    redis_client.script_load(INCR_BY)
    redis_client.set("text", "not a number")
    # Writes wait while Redis is paused for writes: the first pipeline is then on the wire.
    redis_client.execute_command("CLIENT", "PAUSE", 20000, "WRITE")
    results = {}

    def run(i: int) -> None:
        pipe = trips.client.pipeline(transaction=False)
        pipe.set(f"k{i}", f"v{i}")
        incr(keys=[f"n{i}"], args=[i], client=pipe)
        if i == 3:
            pipe.incr("text")  # this caller's error, nobody else's
        pipe.get(f"k{i}")
        results[i] = trips.execute(pipe)

    try:
        first = threading.Thread(target=run, args=(0,))
        first.start()
        wait_until(lambda: trips.round_trips == 1)
        others = [threading.Thread(target=run, args=(i,)) for i in range(1, 11)]
        for thread in others:
            thread.start()
        wait_until(lambda: len(trips._waiting) == 10)
    finally:
        redis_client.execute_command("CLIENT", "UNPAUSE")
    for thread in [first, *others]:
        thread.join(10)
    assert (trips.round_trips, trips.pipelines) == (2, 11)  # the ten that waited went out together
    for i in range(11):
        replies = results[i]
        if i == 3:
            assert replies[:2] == [True, 3] and isinstance(replies[2], redis.ResponseError) and replies[3] == b"v3"
        else:
            assert replies == [True, i, f"v{i}".encode()]


def test_a_connection_error_is_raised_to_the_caller(redis_server):
    from promptq.workers.embedded_redis import free_port

    trips = RoundTrips(redis.Redis(port=free_port(), socket_connect_timeout=0.5, retry=None))
    pipe = trips.client.pipeline(transaction=False)
    pipe.set("a", "1")
    with pytest.raises(redis.ConnectionError):
        trips.execute(pipe)
    # The wire is free again: the next caller leads its own round trip.
    pipe = trips.client.pipeline(transaction=False)
    pipe.set("a", "1")
    with pytest.raises(redis.ConnectionError):
        trips.execute(pipe)
    assert trips.round_trips == 2
