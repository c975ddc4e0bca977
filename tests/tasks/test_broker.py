"""tasks.broker: kombu's Redis channel, building its Redis client once."""

from __future__ import annotations

from kombu import Queue

from promptq.tasks.broker import Channel


def test_the_broker_channel_builds_its_redis_client_once(client, redis_client):
    with client.app.connection_for_write() as conn:
        channel = conn.default_channel
        assert isinstance(channel, Channel)
        built = []
        real = channel._create_client
        channel._create_client = lambda *a, **kw: built.append(a) or real(*a, **kw)
        producer = conn.Producer(channel)
        queue = Queue("bench-broker-test", routing_key="bench-broker-test")
        for i in range(5):
            producer.publish({"n": i}, routing_key="bench-broker-test", declare=[queue], serializer="json")
        assert redis_client.llen("bench-broker-test") == 5
        assert len(built) <= 1


def test_messages_still_round_trip_through_the_queue(client, redis_client):
    with client.app.connection_for_write() as conn:
        queue = Queue("bench-broker-rt", routing_key="bench-broker-rt")
        conn.Producer().publish({"n": 1}, routing_key="bench-broker-rt", declare=[queue], serializer="json")
        simple = conn.SimpleQueue(queue)
        message = simple.get(timeout=5)
        assert message.payload == {"n": 1}
        message.ack()
        simple.close()
