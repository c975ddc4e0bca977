"""tasks.reliable_fetch's QoS: the processing list is the only copy of a taken message.

kombu wrote every delivered message a second time into its `unacked` hash
(and index) and removed it again on ack: a round trip and the message's
size in Redis CPU per job, for a visibility-timeout restore that recovery
(tasks.recovery) does better. These pin that nothing is written there, and
that ack, requeue and a restore at channel close still move the message
from the processing list exactly once.
"""

from __future__ import annotations

import pytest
from kombu import Queue

from promptq.tasks.reliable_fetch import LIVE, Channel, ack_in, acked_in_write

QUEUE = "promptq.ack-test"


@pytest.fixture
def consumer(client, redis_client):
    redis_client.delete(QUEUE)
    with client.app.connection_for_write() as conn:
        channel = conn.default_channel
        assert isinstance(channel, Channel)
        queue = Queue(QUEUE, routing_key=QUEUE)
        producer = conn.Producer(channel)

        def publish(n: int) -> None:
            producer.publish({"n": n}, routing_key=QUEUE, declare=[queue], serializer="json")

        simple = conn.SimpleQueue(queue)
        yield publish, simple, simple.consumer.channel
        simple.close()


def test_a_delivered_message_is_only_in_the_processing_list_and_an_ack_takes_it_out(consumer, redis_client):
    publish, simple, channel = consumer
    publish(1)
    message = simple.get(timeout=5)
    assert message.payload == {"n": 1}
    assert redis_client.hlen("unacked") == 0 and redis_client.zcard("unacked_index") == 0
    assert redis_client.llen(channel.processing_key) == 1
    assert message.delivery_tag in LIVE
    message.ack()
    assert redis_client.llen(channel.processing_key) == 0
    assert message.delivery_tag not in LIVE
    assert redis_client.llen(QUEUE) == 0


def test_a_requeued_message_goes_back_to_its_queue_once(consumer, redis_client):
    publish, simple, channel = consumer
    publish(1)
    publish(2)
    first = simple.get(timeout=5)
    first.requeue()
    assert redis_client.llen(channel.processing_key) == 0
    # kombu's order for a requeue: the end of the line, behind message 2.
    assert [simple.get(timeout=5).payload["n"] for _ in range(2)] == [2, 1]


def test_messages_held_when_the_channel_closes_go_back_to_the_head_of_their_queue(client, redis_client):
    redis_client.delete(QUEUE)
    with client.app.connection_for_write() as conn:
        queue = Queue(QUEUE, routing_key=QUEUE)
        conn.Producer().publish({"n": 1}, routing_key=QUEUE, declare=[queue], serializer="json")
        conn.Producer().publish({"n": 2}, routing_key=QUEUE, declare=[queue], serializer="json")
        simple = conn.SimpleQueue(queue)
        held = simple.get(timeout=5)
        processing = simple.consumer.channel.processing_key
        assert held.payload == {"n": 1} and redis_client.llen(processing) == 1
        simple.close()  # closes the channel: kombu restores what it delivered and no one acked
    assert redis_client.llen(processing) == 0
    with client.app.connection_for_write() as conn:
        simple = conn.SimpleQueue(Queue(QUEUE, routing_key=QUEUE))
        got = [simple.get(timeout=5) for _ in range(2)]
        assert [m.payload["n"] for m in got] == [1, 2]
        for m in got:
            m.ack()
        simple.close()


def test_an_ack_that_rode_in_the_tasks_own_write_sends_nothing_more(consumer, redis_client):
    publish, simple, channel = consumer
    publish(1)
    message = simple.get(timeout=5)
    pipe = redis_client.pipeline(transaction=False)
    assert ack_in(pipe, channel.key_prefix, message.delivery_tag)
    pipe.set("promptq:ack-test:result", "written")  # the task's own write, same round trip
    pipe.execute()
    assert redis_client.llen(channel.processing_key) == 0
    acked_in_write(message.delivery_tag)
    redis_client.config_resetstat()
    message.ack()
    assert "cmdstat_lrem" not in redis_client.info("commandstats")
    assert message.delivery_tag not in LIVE


def test_an_ack_queued_in_a_write_that_never_ran_still_happens(consumer, redis_client):
    publish, simple, channel = consumer
    publish(1)
    message = simple.get(timeout=5)
    assert ack_in(redis_client.pipeline(transaction=False), channel.key_prefix, message.delivery_tag)  # never executed
    message.ack()
    assert redis_client.llen(channel.processing_key) == 0


def test_ack_in_is_a_no_op_for_a_message_this_process_does_not_hold(redis_client):
    pipe = redis_client.pipeline(transaction=False)
    assert not ack_in(pipe, "promptq", "no-such-tag") and not ack_in(pipe, "promptq", None)
    assert len(pipe.command_stack) == 0


def test_the_scan_is_sent_by_its_sha_and_loaded_again_after_a_script_flush(consumer, redis_client):
    publish, simple, channel = consumer
    redis_client.script_flush()
    redis_client.config_resetstat()
    for n in (1, 2):
        publish(n)
        message = simple.get(timeout=5)
        assert message.payload == {"n": n}
        message.ack()
    stats = redis_client.info("commandstats")
    assert "cmdstat_eval" not in stats  # never the whole body
    # One refused (NOSCRIPT), one SCRIPT LOAD (redis-py files it as "script"), then hits.
    assert stats["cmdstat_evalsha"]["failed_calls"] == 1 and stats["cmdstat_evalsha"]["calls"] >= 3
    assert stats["cmdstat_script"]["calls"] == 1
