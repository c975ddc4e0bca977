"""AsyncClient's shared pub/sub connection, on a real redis-server: many
followers, one connection; a channel is subscribed once (and confirmed
before the follower goes on) and left when its last follower leaves."""

from __future__ import annotations

import asyncio

import redis.asyncio as aredis

from promptq.tasks.pubsub_hub import PubSubHub


def test_followers_share_one_connection_and_channels_are_left(redis_server, redis_client):
    async def main():
        client = aredis.Redis.from_url(redis_server.url)
        hub = PubSubHub(client)
        try:
            a1 = await hub.subscribe("ch:a")
            a2 = await hub.subscribe("ch:a")
            b = await hub.subscribe("ch:b")
            # Confirmed: a publish right after subscribe() is never missed.
            assert redis_client.publish("ch:a", "x") == 1
            assert redis_client.publish("ch:b", "y") == 1
            got = [await asyncio.wait_for(q.get(), 5) for q in (a1, a2, b)]
            clients = [c for c in redis_client.client_list() if c.get("sub") not in (None, "0")]
            await hub.unsubscribe("ch:a", a1)
            still = redis_client.pubsub_numsub("ch:a")[0][1]
            await hub.unsubscribe("ch:a", a2)
            await hub.unsubscribe("ch:b", b)
            gone = await _wait(lambda: redis_client.pubsub_numsub("ch:a", "ch:b") == [(b"ch:a", 0), (b"ch:b", 0)])
            return got, len(clients), still, gone
        finally:
            await hub.aclose()
            await client.aclose()

    got, subscribers, still, gone = asyncio.run(main())
    assert got == [b"x", b"x", b"y"]
    assert subscribers == 1
    assert still == 1 and gone


async def _wait(condition, timeout_s=5.0):
    for _ in range(int(timeout_s / 0.05)):
        if condition():
            return True
        await asyncio.sleep(0.05)
    return False
