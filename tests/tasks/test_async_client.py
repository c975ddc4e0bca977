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
