"""EventPublisher.publish_soon: chunk events queued and sent in shared round
trips by one sender thread, yet numbered, stored and ordered exactly as
`publish` would, and never overtaken by the job's next event."""

from __future__ import annotations

import threading
import time

import pytest
import redis

from promptq.tasks.events import decode_event
from tests.worker_process import wait_for


def stored(redis_client, keys, job_id):
    return [decode_event(fields[b"e"]) for _, fields in redis_client.xrange(keys.events(job_id), "-", "+")]


def test_queued_events_are_numbered_and_stored_like_published_ones(publisher, redis_client, keys):
    for i in range(50):
        publisher.publish_soon("j1", "chunk", attempt=1, store=True, provider="openai", target_index=0, text=f"t{i}")
    publisher.wait_sent("j1")
    events = stored(redis_client, keys, "j1")
    assert [e["seq"] for e in events] == list(range(1, 51))
    assert [e["text"] for e in events] == [f"t{i}" for i in range(50)]
    assert list(events[0]) == ["seq", "type", "job_id", "attempt", "ts", "provider", "target_index", "text"]


def test_publish_waits_for_the_jobs_queued_events(publisher, redis_client, keys):
    pubsub = redis_client.pubsub()
    pubsub.subscribe(keys.channel("j1"))
    # Wait for the server's confirmation, so nothing published after this is missed.
    wait_for(lambda: pubsub.get_message(timeout=0.2), 5, 0, "subscription confirmed")
    for i in range(20):
        publisher.publish_soon("j1", "chunk", attempt=1, store=True, text=str(i))
    assert publisher.publish("j1", "done", attempt=1, store=True) == 21
    live, deadline = [], time.monotonic() + 10
    while len(live) < 21 and time.monotonic() < deadline:
        message = pubsub.get_message(timeout=0.2)
        if message and message["type"] == "message":
            live.append(decode_event(message["data"]))
    pubsub.close()
    assert [e["seq"] for e in live] == list(range(1, 22))
    assert live[-1]["type"] == "done"


def test_jobs_sending_at_once_keep_their_own_order(publisher, redis_client, keys):
    def job(name):
        for i in range(200):
            publisher.publish_soon(name, "chunk", attempt=1, store=True, text=str(i))
        publisher.wait_sent(name)

    threads = [threading.Thread(target=job, args=(f"job{n}",)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    for n in range(8):
        events = stored(redis_client, keys, f"job{n}")
        assert [e["text"] for e in events] == [str(i) for i in range(200)]
        assert [e["seq"] for e in events] == list(range(1, 201))


def hold_sender(publisher):
    """Make the next round trip wait until the returned event is set: while it
    waits, every other event is queued (the batched path)."""
    publisher.publish_soon("warm-up", "chunk", attempt=1, store=False, text="")
    publisher.wait_sent("warm-up")
    sender = publisher._sender
    release, holding = threading.Event(), threading.Event()
    real_send = sender._send

    def slow_send(batch):
        holding.set()
        release.wait(10)
        sender._send = real_send
        return real_send(batch)

    sender._send = slow_send
    thread = threading.Thread(target=publisher.publish_soon, args=("slow", "chunk"),
                              kwargs={"attempt": 1, "store": True, "text": "s"})
    thread.start()
    assert holding.wait(5)
    return release, thread


def test_a_send_error_is_raised_by_wait_sent_or_the_next_event(publisher, redis_client, keys):
    redis_client.set(keys.seq("bad"), "not a number")  # INCR fails inside the script
    publisher.publish_soon("bad", "chunk", attempt=1, store=True, text="x")
    with pytest.raises(redis.ResponseError):
        publisher.wait_sent("bad")
    publisher.publish_soon("bad", "chunk", attempt=1, store=True, text="y")
    wait_for(lambda: "bad" in publisher._sender._errors, 5, 0.01, "the send failed")
    with pytest.raises(redis.ResponseError):  # the job's next event raises it
        publisher.publish_soon("bad", "chunk", attempt=1, store=True, text="z")


def test_a_queued_events_error_is_raised_to_that_job_only(publisher, redis_client, keys):
    redis_client.set(keys.seq("bad"), "not a number")
    release, thread = hold_sender(publisher)
    publisher.publish_soon("bad", "chunk", attempt=1, store=True, text="x")  # queued: no error yet
    publisher.publish_soon("good", "chunk", attempt=1, store=True, text="y")
    release.set()
    thread.join(5)
    with pytest.raises(redis.ResponseError):
        publisher.wait_sent("bad")
    publisher.wait_sent("good")
    assert [e["text"] for e in stored(redis_client, keys, "good")] == ["y"]
    assert [e["text"] for e in stored(redis_client, keys, "slow")] == ["s"]
    publisher.wait_sent("bad")  # reported once


def test_the_error_can_be_left_to_the_exception_already_raised(publisher, redis_client, keys):
    redis_client.set(keys.seq("bad"), "not a number")
    release, thread = hold_sender(publisher)
    publisher.publish_soon("bad", "chunk", attempt=1, store=True, text="x")
    release.set()
    thread.join(5)
    publisher.wait_sent("bad", raise_error=False)
    publisher.wait_sent("bad")


def test_queued_events_go_in_one_round_trip_in_order(publisher, redis_client, keys):
    release, thread = hold_sender(publisher)
    sender = publisher._sender
    batches = []
    real_pipeline = sender._pipeline
    sender._pipeline = lambda batch: batches.append(len(batch)) or real_pipeline(batch)
    for i in range(30):
        publisher.publish_soon(f"j{i % 3}", "chunk", attempt=1, store=True, text=str(i))
    release.set()
    thread.join(5)
    for j in range(3):
        publisher.wait_sent(f"j{j}")
        assert [e["text"] for e in stored(redis_client, keys, f"j{j}")] == [str(i) for i in range(j, 30, 3)]
    assert batches[-1] == 30  # the held one ("slow") went first, alone


def test_scripts_flushed_from_redis_are_loaded_again(publisher, redis_client, keys):
    publisher.publish_soon("j1", "chunk", attempt=1, store=True, text="before")
    publisher.wait_sent("j1")
    redis_client.script_flush()
    publisher.publish_soon("j1", "chunk", attempt=1, store=True, text="after")
    publisher.wait_sent("j1")
    assert [e["text"] for e in stored(redis_client, keys, "j1")] == ["before", "after"]


def test_a_watched_field_is_read_in_the_events_round_trip(publisher, redis_client, keys):
    job_key = keys.job("j1")
    publisher.publish_soon("j1", "chunk", attempt=1, store=True, watch=(job_key, "cancel_requested"), text="a")
    publisher.wait_sent("j1")
    assert not publisher.watched("j1")
    redis_client.hset(job_key, "cancel_requested", "1")
    publisher.publish_soon("j1", "chunk", attempt=1, store=True, text="b")  # not watching: not read
    publisher.publish_soon("j2", "chunk", attempt=1, store=True, watch=(job_key, "cancel_requested"), text="c")
    wait_for(lambda: publisher.watched("j2"), 5, 0.01, "flag seen")
    assert not publisher.watched("j1")
    publisher.wait_sent("j2")
    assert not publisher.watched("j2")  # forgotten with the job's events
    assert [e["text"] for e in stored(redis_client, keys, "j1")] == ["a", "b"]


def test_execute_scripts_survives_a_script_flush_without_running_anything_twice(redis_client, keys, publisher):
    # tasks.pipeline.execute_scripts sends a pipeline's script calls as bare EVALSHA
    # (no SCRIPT EXISTS round trip) and resends only those Redis refused.
    from promptq.tasks.pipeline import execute_scripts

    def pipeline_with_calls():
        pipe = redis_client.pipeline(transaction=False)
        pipe.rpush("side-effects", "x")
        publisher.publish("j1", "chunk", attempt=1, store=True, pipe=pipe, text="a")
        publisher.publish("j1", "done", attempt=1, store=True, pipe=pipe)
        return pipe

    assert execute_scripts(redis_client, pipeline_with_calls()) == [1, 1, 2]
    redis_client.script_flush()
    assert execute_scripts(redis_client, pipeline_with_calls()) == [2, 3, 4]
    assert redis_client.llen("side-effects") == 2  # nothing ran twice
    assert [e["seq"] for e in stored(redis_client, keys, "j1")] == [1, 2, 3, 4]
