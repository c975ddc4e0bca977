"""One attempt's `chunk` events, sent from the thread that reads the provider.

The streaming fast path (bench/, streaming case): per socket read of the
provider's answer, the pieces it completed become ONE `chunk` event whose
text is theirs joined, sent at once by the reading thread (or greenlet) in
one round trip. No hand-off to a sender thread, no lock, no wake-up per
chunk: while this round trip is in flight the next pieces pile up in the
socket, and the next read takes them all, so under load events grow and
their number drops by itself, and an idle stream still sends every piece
the moment it arrives.

Everything constant over an attempt is encoded once: the RESP header of the
EVALSHA (script, keys) and its tail (cap, TTL, channel), and the JSON of the
event's fixed fields. Per event only the timestamp and the text are
formatted. The script, its numbering, replay stream and TTLs are
`tasks.events`'s own (`_PUBLISH`): a follower cannot tell a merged event
from a single one except that its text is longer. Sequence numbers, order
(one job's events go one at a time from one thread), replay and de-dup are
unchanged.

The cancel flag is read in the same round trip, every `cancel_every` pieces.
One pooled connection is held from the first event to `close()`.
"""

from __future__ import annotations

import json
import time
from typing import Any, Optional, Tuple

import redis

from .events import EventPublisher


def _bulk(value: Any) -> bytes:
    data = value if isinstance(value, bytes) else str(value).encode("utf-8")
    return b"$%d\r\n%s\r\n" % (len(data), data)


_NOT_SET = (None, b"", b"0", "", "0")


class ChunkRelay:
    """Publishes the chunk events of one attempt of one job."""

    def __init__(self, events: EventPublisher, job_id: str, *, attempt: int, provider: str, target_index: int,
                 watch: Optional[Tuple[str, str]] = None, cancel_every: int = 32):
        self.redis = events.redis
        self.pool = events.redis.connection_pool
        self.script = events._script
        keys = events.keys
        # The event's JSON without its opening brace (the script prepends
        # '{"seq":N,'), fields in `EventPublisher.publish`'s order, split
        # around the timestamp and the text.
        head = json.dumps({"type": "chunk", "job_id": job_id, "attempt": attempt}, separators=(",", ":"))
        mid = json.dumps({"provider": provider, "target_index": target_index}, separators=(",", ":"))
        self._fixed = head[1:-1].encode("utf-8") + b',"ts":'
        self._mid = b"," + mid[1:-1].encode("utf-8") + b',"text":'
        self._tail = (_bulk(events.maxlen) + _bulk(events.ttl_s) + _bulk(keys.channel(job_id)) + _bulk("1"))
        self._keys = _bulk(3) + _bulk(keys.seq(job_id)) + _bulk(keys.events(job_id)) + _bulk(keys.job(job_id))
        self._head = self._make_head()
        self._watch = b"*3\r\n$4\r\nHGET\r\n" + _bulk(watch[0]) + _bulk(watch[1]) if watch else b""
        self.cancel_every = cancel_every
        self.pieces = 0
        self.events = 0
        self._conn: Any = None

    def _make_head(self) -> bytes:
        return b"*11\r\n$7\r\nEVALSHA\r\n" + _bulk(self.script.sha) + self._keys

    def send(self, text: str, pieces: int = 1) -> bool:
        """Publish one chunk event holding `pieces` pieces; True if the job's
        cancel flag was read and found set in the same round trip."""
        before = self.pieces
        self.pieces += pieces
        watch = bool(self._watch) and self.pieces // self.cancel_every > before // self.cancel_every
        body = b"%s%.6f%s%s}" % (self._fixed, time.time(), self._mid, json.dumps(text).encode("ascii"))
        replies = self._round_trip(body, watch)
        if isinstance(replies[0], redis.exceptions.NoScriptError):
            # Redis restarted or its scripts were flushed; the call did not run.
            self.script.sha = self.redis.script_load(self.script.script)
            self._head = self._make_head()
            replies = self._round_trip(body, watch)
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        self.events += 1
        return watch and replies[1] not in _NOT_SET

    def _round_trip(self, body: bytes, watch: bool) -> list:
        packed = b"".join((self._head, b"$%d\r\n" % len(body), body, b"\r\n", self._tail, self._watch if watch else b""))
        conn = self._conn
        if conn is None:
            # Kept for the attempt: borrowing one per event costs a pool
            # lock and a readiness poll each time, and under gevent that
            # poll yields to every other greenlet (measured: a 10x worse p99).
            conn = self._conn = self.pool.get_connection()
        try:
            conn.send_packed_command([packed])
            replies = []
            for _ in range(2 if watch else 1):
                try:
                    replies.append(conn.read_response())
                except redis.exceptions.ResponseError as exc:
                    replies.append(exc)  # the reply was read whole; the connection is fine
            return replies
        except BaseException:
            self._conn = None
            conn.disconnect()
            self.pool.release(conn)
            raise

    def close(self) -> None:
        """Give the connection back to the pool (the attempt is over)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            self.pool.release(conn)
