"""kombu's Redis transport, keeping one Redis client per channel.

kombu's `Channel.conn_or_acquire()` builds a new `redis.Redis` for every
operation that is not handed a client: each message delivered and acked
(the unacked hash and index, MULTI/EXEC), each publish. Building one costs
tens of microseconds (its response-callback table is copied each time) and
was a visible share of a worker's CPU per job in bench/ (py-spy), most under
gevent. A `redis.Redis` is safe to share across threads and greenlets (each
command borrows a connection from the channel's pool, as before), so this
channel builds it once. Everything else is kombu's.

Reliable fetch (tasks.reliable_fetch) builds on this channel; tasks.app
names that transport for plain Redis URLs.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

from kombu.transport import redis as kombu_redis


class Channel(kombu_redis.Channel):
    _shared_client: Any = None

    @contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[Any]:
        if client:
            yield client
            return
        shared = self._shared_client
        if shared is None or shared.connection_pool is not self.pool:
            shared = self._shared_client = self._create_client()
        yield shared

    def close(self) -> None:
        self._shared_client = None
        super().close()


class Transport(kombu_redis.Transport):
    Channel = Channel


#: What `broker_transport` names for a redis:// URL.
TRANSPORT = f"{__name__}:Transport"
