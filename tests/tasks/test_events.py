"""EventPublisher: one Lua call numbers, publishes and (optionally) stores an event."""

from __future__ import annotations

import json
import time

import pytest

from promptq.tasks.events import EventPublisher, decode_event
from tests.worker_process import wait_for


def stored(redis_client, keys, job_id="j1"):
    return [decode_event(fields[b"e"]) for _, fields in redis_client.xrange(keys.events(job_id), "-", "+")]


def subscribe(redis_client, channel):
    pubsub = redis_client.pubsub()
    pubsub.subscribe(channel)
    # Wait for the server's confirmation, so nothing published after this is missed.
    wait_for(lambda: pubsub.get_message(timeout=0.2), 5, 0, "subscription confirmed")
    return pubsub


def collect(pubsub, count, timeout_s=5.0):
    got, deadline = [], time.monotonic() + timeout_s
    while len(got) < count and time.monotonic() < deadline:
        message = pubsub.get_message(timeout=0.2)
        if message and message["type"] == "message":
            got.append(message["data"])
    return got


def test_sequence_numbers_increase_by_one_whatever_is_stored(publisher, redis_client, keys):
    seqs = [publisher.publish("j1", "chunk", attempt=1, store=i % 2 == 0, text=str(i)) for i in range(10)]
    assert seqs == list(range(1, 11))
    assert int(redis_client.get(keys.seq("j1"))) == 10
    # Another job has its own numbering.
    assert publisher.publish("j2", "chunk", attempt=1, store=True, text="x") == 1


def test_payload_fields(publisher, redis_client, keys):
    before = time.time()
    publisher.publish("j1", "retry", attempt=2, store=True, error={"message": "429"}, delay_s=1.5)
    (event,) = stored(redis_client, keys)
    assert {k: event[k] for k in ("seq", "type", "job_id", "attempt", "error", "delay_s")} == {
        "seq": 1, "type": "retry", "job_id": "j1", "attempt": 2, "error": {"message": "429"}, "delay_s": 1.5,
    }
    assert before - 1 <= event["ts"] <= time.time() + 1
    assert list(event)[0] == "seq"


def test_text_with_quotes_and_unicode_survives(publisher, redis_client, keys):
    text = 'he said "hi" — {ok}, \\n 日本'
    publisher.publish("j1", "chunk", attempt=1, store=True, text=text)
    assert stored(redis_client, keys)[0]["text"] == text


def test_store_true_appends_to_an_expiring_replay_stream(publisher, redis_client, keys):
    for i in range(3):
        publisher.publish("j1", "chunk", attempt=1, store=True, text=f"t{i}")
    events = stored(redis_client, keys)
    assert [(e["seq"], e["text"]) for e in events] == [(1, "t0"), (2, "t1"), (3, "t2")]
    assert 0 < redis_client.ttl(keys.events("j1")) <= 600
    assert 0 < redis_client.ttl(keys.seq("j1")) <= 600


def test_store_false_publishes_only(redis_server, publisher, redis_client, keys):
    listener = redis_server.client()
    pubsub = subscribe(listener, keys.channel("j1"))
    try:
        assert publisher.publish("j1", "done", attempt=1, store=False, usage={"output_tokens": 3}) == 1
        (raw,) = collect(pubsub, 1)
        assert decode_event(raw)["type"] == "done"
        assert redis_client.exists(keys.events("j1")) == 0
        assert 0 < redis_client.ttl(keys.seq("j1")) <= 600
    finally:
        pubsub.close()
        listener.close()


def test_replay_stream_is_capped_approximately(redis_client, keys):
    publisher = EventPublisher(redis_client, keys, maxlen=50, ttl_s=600)
    pipe = redis_client.pipeline(transaction=False)
    for i in range(1000):
        publisher.publish("j1", "chunk", attempt=1, store=True, pipe=pipe, text=str(i))
    assert pipe.execute()[-1] == 1000
    length = redis_client.xlen(keys.events("j1"))
    # MAXLEN ~ trims whole stream nodes (100 entries by default): at least 50 kept, far fewer than 1000.
    assert 50 <= length <= 150, length
    events = stored(redis_client, keys)
    assert events[-1]["seq"] == 1000
    assert [e["seq"] for e in events] == list(range(1001 - length, 1001))


def test_publish_inside_a_pipeline_returns_none(publisher, redis_client, keys):
    pipe = redis_client.pipeline(transaction=False)
    assert publisher.publish("j1", "chunk", attempt=1, store=True, pipe=pipe, text="a") is None
    assert redis_client.exists(keys.events("j1")) == 0  # nothing sent yet
    assert pipe.execute() == [1]
    assert stored(redis_client, keys)[0]["text"] == "a"


def test_subscriber_receives_the_stored_payloads(redis_server, publisher, redis_client, keys):
    listener = redis_server.client()
    pubsub = subscribe(listener, keys.channel("j1"))
    try:
        publisher.publish("j1", "chunk", attempt=1, store=True, text="a")
        publisher.publish("j1", "reset", attempt=1, store=True, reason="boom")
        publisher.publish("j1", "done", attempt=2, store=True, usage={})
        live = [decode_event(raw) for raw in collect(pubsub, 3)]
        assert live == stored(redis_client, keys)
        assert [(e["seq"], e["type"], e["attempt"]) for e in live] == [(1, "chunk", 1), (2, "reset", 1), (3, "done", 2)]
        # Another job's channel is not heard: the next message is j1's marker.
        publisher.publish("j2", "chunk", attempt=1, store=True, text="other")
        publisher.publish("j1", "chunk", attempt=2, store=False, text="marker")
        (after,) = [decode_event(raw) for raw in collect(pubsub, 1)]
        assert (after["job_id"], after["seq"], after["text"]) == ("j1", 4, "marker")
    finally:
        pubsub.close()
        listener.close()


@pytest.mark.parametrize("raw", [b'{"seq":1,"type":"chunk"}', '{"seq":1,"type":"chunk"}'])
def test_decode_event_accepts_bytes_and_str(raw):
    assert decode_event(raw) == {"seq": 1, "type": "chunk"}
    assert json.loads(raw) == decode_event(raw)


def test_a_non_streamed_jobs_events_are_numbered_in_its_record(publisher, redis_client, keys):
    # A job with a record whose events are not kept has no seq key at all.
    redis_client.hset(keys.job("j1"), mapping={"status": "running"})
    assert publisher.publish("j1", "retry", attempt=1, store=False, delay_s=1) == 1
    assert publisher.publish("j1", "done", attempt=2, store=False) == 2
    assert redis_client.exists(keys.seq("j1")) == 0
    assert redis_client.hget(keys.job("j1"), "seq") == b"2"


def test_numbering_continues_when_a_job_starts_keeping_events(publisher, redis_client, keys):
    redis_client.hset(keys.job("j1"), mapping={"status": "running"})
    assert publisher.publish("j1", "retry", attempt=1, store=False) == 1
    assert publisher.publish("j1", "cancelled", attempt=1, store=True) == 2
    assert publisher.publish("j1", "done", attempt=1, store=False) == 3  # the seq key now counts
    assert [e["seq"] for e in stored(redis_client, keys)] == [2]
