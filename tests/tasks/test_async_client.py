"""AsyncClient's own I/O (beyond the follow tests it shares with Client):
its one-round-trip send and release survives a Redis that lost its scripts."""

from __future__ import annotations

import asyncio

from promptq.tasks.async_client import AsyncClient


def test_submit_after_redis_lost_its_scripts(settings, redis_client, keys, queue_messages):
    async def main():
        async with AsyncClient(settings) as client:
            await client.submit("first", to=["mock:m"], job_id="j1")
            redis_client.script_flush()  # a restarted Redis: every SHA is unknown
            await client.submit("second", to=["mock:m"], job_id="j2")

    asyncio.run(main())
    assert [m["args"][0] for m in queue_messages("promptq.mock")] == ["j1", "j2"]
    # Both released: out of inflight, the broker holds them.
    assert redis_client.zscore(keys.inflight, "j1") is None and redis_client.zscore(keys.inflight, "j2") is None


def test_a_batch_lane_job_goes_to_its_lanes_list(settings, redis_client):
    from promptq.tasks.lanes import list_key

    async def main():
        async with AsyncClient(settings) as client:
            await client.submit("later", to=["mock:m"], job_id="j1", priority="batch")

    asyncio.run(main())
    assert redis_client.llen("promptq.mock") == 0
    (raw,) = redis_client.lrange(list_key("promptq.mock", "batch"), 0, -1)
    assert b'"priority": 9' in raw or b'"priority":9' in raw
