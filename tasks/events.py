"""A job's live events: JSON on its pub/sub channel, kept in a Redis stream.

Pub/sub is at-most-once and a subscriber that joins late hears nothing, so
every event of a streamed job is also appended (capped, expiring) to a Redis
stream; a follower subscribes first, replays the stream, and drops anything
it has already seen by sequence number. One Lua call numbers, publishes and
stores an event, so numbering can never race.

A streamed job's `chunk` events are sent by the thread reading the
provider's answer, one event per socket read (tasks.chunk_relay, same
script, same numbering).

Event types:
    chunk     {"text"}                       the next text: the pieces read together, joined
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
from .store_calls import ScriptCall

TERMINAL_EVENTS = frozenset({"done", "error", "cancelled"})

# KEYS: seq, stream, job record ; ARGV: body (an object's JSON without its
#   opening brace), maxlen, ttl, channel, store ('1' keeps it for replay)
#
# Numbering: a job whose events are not kept (a non-streamed job) counts
# them in its record's `seq` field, so it has no key of its own (fewer keys,
# bytes and commands per job); otherwise, and for an event of a job with no
# record, the seq key counts, continuing from the record's count if any.
# Which of seq key and record exist is one EXISTS that names the seq key
# twice (EXISTS counts a key each time it is named): 2 x seq + record.
_PUBLISH = """
local seq
if ARGV[5] ~= '1' and redis.call('EXISTS', KEYS[1], KEYS[1], KEYS[3]) == 1 then
  seq = redis.call('HINCRBY', KEYS[3], 'seq', 1)
else
  seq = redis.call('INCR', KEYS[1])
  if seq == 1 then
    local counted = tonumber(redis.call('HGET', KEYS[3], 'seq') or '0')
    if counted and counted > 0 then
      seq = counted + 1
      redis.call('SET', KEYS[1], seq)
    end
  end
  redis.call('EXPIRE', KEYS[1], ARGV[3])
end
local payload = '{"seq":' .. seq .. ',' .. ARGV[1]
redis.call('PUBLISH', ARGV[4], payload)
if ARGV[5] == '1' then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 'e', payload)
  redis.call('EXPIRE', KEYS[2], ARGV[3])
end
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
        call = publish_call(self.keys, job_id, event_type, attempt=attempt, store=store, maxlen=self.maxlen,
                            ttl_s=self.ttl_s, fields=fields)
        result = self._script(keys=list(call.keys), args=list(call.args), client=pipe)
        return None if pipe is not None else int(result)


def publish_call(
    keys: Keys, job_id: str, event_type: str, *, attempt: int, store: bool, maxlen: int, ttl_s: float,
    fields: Dict[str, Any],
) -> ScriptCall:
    """The one script call that numbers, publishes and (if `store`) keeps an event. Pure."""
    body = {"type": event_type, "job_id": job_id, "attempt": attempt, "ts": round(time.time(), 6)}
    body.update(fields)
    encoded = json.dumps(body, separators=(",", ":"))
    return ScriptCall(
        _PUBLISH,
        [keys.seq(job_id), keys.events(job_id), keys.job(job_id)],
        [encoded[1:], maxlen, int(ttl_s), keys.channel(job_id), "1" if store else "0"],
    )


def decode_event(raw: Any) -> Dict[str, Any]:
    """An event from pub/sub or the replay stream, as a dict."""
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8")
    return json.loads(raw)
