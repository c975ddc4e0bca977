"""One pub/sub connection shared by every follower of an `AsyncClient`.

redis.asyncio's `PubSub` takes a connection of its own and disconnects it
when closed, so a follower per HTTP request meant a new TCP connection per
request (measured: the largest cost of `promptq serve` under load, see
bench case `gateway`). Here one `PubSub` subscribes to each followed job's
channel once, a reader task hands each message to the queues of that
channel's followers, and the channel is unsubscribed when its last follower
leaves. The follow logic itself (replay, sequence numbers, gap filling,
reading the record when quiet) is unchanged: it is `tasks.client_core`'s,
and sees the same `Subscribe` / `Listen` answers a private connection gives.

redis-py re-subscribes a `PubSub`'s channels itself after a reconnect; what
was published meanwhile is lost, which followers already survive (a gap in
sequence numbers is filled from the replay stream; a quiet job's end is read
from its record).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Dict, Optional, Set

logger = logging.getLogger(__name__)

#: A follower waits this long at most for Redis to confirm its subscription.
CONFIRM_TIMEOUT_S = 2.0


class PubSubHub:
    def __init__(self, client: Any):
        self.redis = client
        self._pubsub: Any = None
        self._followers: Dict[bytes, Set[asyncio.Queue]] = {}
        self._lock = asyncio.Lock()
        self._reader: Optional[asyncio.Task] = None
        self._confirmed: Dict[bytes, asyncio.Event] = {}

    async def subscribe(self, channel: str) -> asyncio.Queue:
        """A queue that receives the data of every message on `channel` from now on."""
        key = channel.encode()
        queue: asyncio.Queue = asyncio.Queue()
        async with self._lock:
            if self._pubsub is None:
                self._pubsub = self.redis.pubsub()
            followers = self._followers.get(key)
            confirmed = None
            if followers is None:
                followers = self._followers[key] = set()
                confirmed = self._confirmed[key] = asyncio.Event()
                await self._pubsub.subscribe(channel)
            else:
                confirmed = self._confirmed.get(key)
            followers.add(queue)
            if self._reader is None or self._reader.done():
                self._reader = asyncio.get_running_loop().create_task(self._read())
        if confirmed is not None:
            # Redis answers SUBSCRIBE once the subscription is live: only then
            # may the follower replay and read the record, or an event
            # published in between would be missed.
            try:
                await asyncio.wait_for(confirmed.wait(), CONFIRM_TIMEOUT_S)
            except asyncio.TimeoutError:
                logger.warning("no SUBSCRIBE confirmation for %s within %ss", channel, CONFIRM_TIMEOUT_S)
        return queue

    async def unsubscribe(self, channel: str, queue: asyncio.Queue) -> None:
        key = channel.encode()
        async with self._lock:
            followers = self._followers.get(key)
            if followers is None:
                return
            followers.discard(queue)
            if not followers:
                del self._followers[key]
                self._confirmed.pop(key, None)
                if self._pubsub is not None:
                    await self._pubsub.unsubscribe(channel)

    async def _read(self) -> None:
        failing = False
        while True:
            try:
                message = await self._pubsub.get_message(timeout=1.0)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # connection trouble: redis-py reconnects and re-subscribes on the next read
                if not failing:  # once per outage, not every retry
                    logger.warning("pub/sub read failed, retrying: %s", exc)
                failing = True
                await asyncio.sleep(0.2)
                continue
            if failing:
                logger.warning("pub/sub reads work again")
                failing = False
            if message is None:
                continue
            channel = message["channel"]
            channel = channel if isinstance(channel, bytes) else channel.encode()
            if message.get("type") == "subscribe":
                event = self._confirmed.get(channel)
                if event is not None:
                    event.set()
            elif message.get("type") == "message":
                for queue in self._followers.get(channel, ()):
                    queue.put_nowait(message["data"])

    async def aclose(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        if self._pubsub is not None:
            await self._pubsub.aclose()
        self._followers.clear()
