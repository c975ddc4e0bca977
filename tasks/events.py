"""A job's live events: JSON on its pub/sub channel, kept in a Redis stream.

Pub/sub is at-most-once and a subscriber that joins late hears nothing, so
every event of a streamed job is also appended (capped, expiring) to a Redis
stream; a follower subscribes first, replays the stream, and drops anything
it has already seen by sequence number. One Lua call numbers, publishes and
stores an event: one round trip per event, and numbering can never race.

Event types:
    chunk     {"text"}                       a piece of the answer
    retry     {"error", "delay_s"}           this attempt failed; same provider again later
    failover  {"error", "to"}                this target failed; the next one takes over
    reset     {"reason"}                     an attempt that had streamed text failed:
                                             discard what it sent
    done      {"usage", "provider", "model", "finish_reason"}
    error     {"error"}                      no target left; the job failed
    cancelled {}
Every event also carries seq, type, job_id, attempt and ts.
"""

from __future__ import annotations

import json
import time
from typing import Any, Dict, Optional

from .keys import Keys

TERMINAL_EVENTS = frozenset({"done", "error", "cancelled"})

# KEYS: seq, stream ; ARGV: body (an object's JSON without its opening brace),
#   maxlen, ttl, channel, store ('1' keeps it for replay)
_PUBLISH = """
local seq = redis.call('INCR', KEYS[1])
local payload = '{"seq":' .. seq .. ',' .. ARGV[1]
redis.call('PUBLISH', ARGV[4], payload)
if ARGV[5] == '1' then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 'e', payload)
  redis.call('EXPIRE', KEYS[2], ARGV[3])
end
redis.call('EXPIRE', KEYS[1], ARGV[3])
return seq
"""


class EventPublisher:
    """Numbers, publishes and (for streamed jobs) stores a job's events."""

    def __init__(self, client: Any, keys: Keys, *, maxlen: int = 10_000, ttl_s: float = 86_400.0):
        self.redis = client
        self.keys = keys
        self.maxlen = maxlen
        self.ttl_s = int(ttl_s)
        self._script = client.register_script(_PUBLISH)

    def publish(
        self,
        job_id: str,
        event_type: str,
        *,
        attempt: int,
        store: bool,
        pipe: Any = None,
        **fields: Any,
    ) -> Optional[int]:
        """Send one event; returns its sequence number (None inside a pipeline)."""
        body = {"type": event_type, "job_id": job_id, "attempt": attempt, "ts": round(time.time(), 6)}
        body.update(fields)
        encoded = json.dumps(body, separators=(",", ":"))
        result = self._script(
            keys=[self.keys.seq(job_id), self.keys.events(job_id)],
            args=[encoded[1:], self.maxlen, self.ttl_s, self.keys.channel(job_id), "1" if store else "0"],
            client=pipe,
        )
        return None if pipe is not None else int(result)


def decode_event(raw: Any) -> Dict[str, Any]:
    """An event from pub/sub or the replay stream, as a dict."""
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8")
    return json.loads(raw)
