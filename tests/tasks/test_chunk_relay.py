"""ChunkRelay: one attempt's chunk events, merged per read, sent by the reading
thread, numbered, stored and shaped exactly as `EventPublisher.publish` would."""

from __future__ import annotations

import pytest

from promptq.tasks.chunk_relay import ChunkRelay
from promptq.tasks.events import decode_event
from tests.tasks.test_events import collect, subscribe


def stored(redis_client, keys, job_id="j1"):
    return [decode_event(fields[b"e"]) for _, fields in redis_client.xrange(keys.events(job_id), "-", "+")]


def relay(publisher, job_id="j1", **kwargs):
    return ChunkRelay(publisher, job_id, attempt=2, provider="openai", target_index=1, **kwargs)


def test_a_merged_event_has_the_pieces_text_and_the_usual_fields(publisher, redis_client, keys):
    r = relay(publisher)
    assert r.send("Hel" + "lo, " + "wor", pieces=3) is False
    r.send("ld", pieces=1)
    a, b = stored(redis_client, keys)
    assert list(a) == ["seq", "type", "job_id", "attempt", "ts", "provider", "target_index", "text"]
    assert {k: a[k] for k in ("seq", "type", "job_id", "attempt", "provider", "target_index", "text")} == {
        "seq": 1, "type": "chunk", "job_id": "j1", "attempt": 2, "provider": "openai", "target_index": 1,
        "text": "Hello, wor"}
    assert (b["seq"], b["text"]) == (2, "ld")
    assert r.pieces == 4 and r.events == 2


def test_merged_events_are_numbered_with_the_jobs_other_events(publisher, redis_client, keys):
    assert publisher.publish("j1", "retry", attempt=1, store=True, error={"message": "x"}) == 1
    relay(publisher).send("ab", pieces=2)
    assert publisher.publish("j1", "done", attempt=2, store=True) == 3
    assert [e["seq"] for e in stored(redis_client, keys)] == [1, 2, 3]
    assert 0 < redis_client.ttl(keys.seq("j1")) <= 600


def test_text_with_quotes_and_unicode_survives_and_is_published(redis_server, publisher, redis_client, keys):
    text = 'he said "hi" \u2014 {ok}, \\n \u65e5\u672c\n'
    listener = redis_server.client()
    pubsub = subscribe(listener, keys.channel("j1"))
    try:
        relay(publisher).send(text, pieces=2)
        (raw,) = collect(pubsub, 1)
    finally:
        pubsub.close()
        listener.close()
    assert decode_event(raw)["text"] == text
    assert stored(redis_client, keys)[0]["text"] == text


def test_the_cancel_flag_is_read_every_n_pieces(publisher, redis_client, keys):
    redis_client.hset(keys.job("j1"), mapping={"status": "running", "cancel_requested": "1"})
    r = relay(publisher, watch=(keys.job("j1"), "cancel_requested"), cancel_every=4)
    assert r.send("a", pieces=2) is False   # 2 pieces: not yet
    assert r.send("b", pieces=1) is False   # 3
    assert r.send("cd", pieces=2) is True   # 5: crossed 4, the flag is read and set
    assert [e["text"] for e in stored(redis_client, keys)] == ["a", "b", "cd"]


def test_an_unset_cancel_flag_reads_false(publisher, redis_client, keys):
    redis_client.hset(keys.job("j1"), mapping={"status": "running"})
    r = relay(publisher, watch=(keys.job("j1"), "cancel_requested"), cancel_every=1)
    assert r.send("a") is False


def test_scripts_flushed_from_redis_are_loaded_again(publisher, redis_client, keys):
    r = relay(publisher)
    r.send("a")
    redis_client.script_flush()
    r.send("b")
    assert [(e["seq"], e["text"]) for e in stored(redis_client, keys)] == [(1, "a"), (2, "b")]


def test_a_script_error_is_raised_and_the_connection_stays_usable(publisher, redis_client, keys):
    redis_client.set(keys.seq("j1"), "not a number")  # INCR fails inside the script
    r = relay(publisher)
    with pytest.raises(Exception, match="not an integer"):
        r.send("a")
    relay(publisher, "j2").send("b")
    assert stored(redis_client, keys, "j2")[0]["text"] == "b"
    assert redis_client.ping()


def test_one_connection_is_held_for_the_attempt_and_given_back(publisher, redis_client, keys):
    pool = redis_client.connection_pool
    r = relay(publisher)
    for i in range(5):
        r.send(str(i))
    assert len(pool._in_use_connections) == 1
    r.close()
    assert len(pool._in_use_connections) == 0
    r.send("again")  # a relay used after close borrows again
    r.close()
    assert [e["text"] for e in stored(redis_client, keys)] == ["0", "1", "2", "3", "4", "again"]
