"""Waiting in Redis, not in workers: a sorted set of jobs by due time, and a mover.

A job that must wait (no budget now, a 429, or a real retry's backoff)
leaves its worker at once: one Lua call (`defer`) checks the job's token,
gives it a fresh one, marks it `waiting` (capacity) or `retrying` (a real
failure), takes it out of `inflight` and adds it to `{prefix}:deferred`
scored by its due time. The Celery message is acknowledged; no ETA message
is held anywhere, so a million waiting jobs cost Redis one record and one
sorted-set entry each, and a worker nothing.

Every worker process runs a `Mover` thread: every `mover_interval_s` it
takes the due entries, builds each job's message (tasks.batch_submit's
MessageBuilder, the same bytes `send_task` would write) with a fresh token,
and one Lua call per job checks the entry is still there, fences the record
with the new token, marks it queued and LPUSHes the message, all at once.
Two movers racing for one job: the second finds the entry gone. A mover
dying half-way: the entry is still there (nothing happened) or the message
is on its queue (everything happened).

Because a waiting job is not in `inflight`, the lease reaper never
re-publishes it (issue 8, fix 4), and a worker's heartbeat, which only
refreshes entries that exist (ZADD XX), cannot resurrect it.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any, Dict, List, Optional, Tuple

from .lanes import lane_of, list_key
from .pipeline import execute_scripts
from .redis_wait import is_transient
from .store import new_token

logger = logging.getLogger(__name__)

#: Jobs moved per mover round (the rest wait for the next round).
MOVE_BATCH = 500

# KEYS: job, inflight, batch, deferred, waiting-by-endpoint. ARGV: now, token,
# new_token, status ('waiting'|'retrying'), target_index, attempt, due, job_id,
# has_batch, counter, rate_limited ('1' adds to rl_waits:<target>), reason, endpoint.
# Returns waiting_since ("<target_index>:<time>") or '' if the token was stale.
_DEFER = """
if redis.call('HGET', KEYS[1], 'token') ~= ARGV[2] then return '' end
local st = redis.call('HGET', KEYS[1], 'status')
if st == 'succeeded' or st == 'failed' or st == 'cancelled' then return '' end
redis.call('HSET', KEYS[1], 'status', ARGV[4], 'token', ARGV[3], 'target_index', ARGV[5],
           'attempt', ARGV[6], 'updated_at', ARGV[1], 'wait_reason', ARGV[12], 'due_at', ARGV[7])
if ARGV[11] == '1' then redis.call('HINCRBY', KEYS[1], 'rl_waits:' .. ARGV[5], 1) end
local since = redis.call('HGET', KEYS[1], 'waiting_since') or ''
local prefix = ARGV[5] .. ':'
if string.sub(since, 1, #prefix) ~= prefix then
  since = prefix .. ARGV[1]
  redis.call('HSET', KEYS[1], 'waiting_since', since)
end
redis.call('ZREM', KEYS[2], ARGV[8])
if redis.call('ZADD', KEYS[4], ARGV[7], ARGV[8]) == 1 then
  redis.call('HINCRBY', KEYS[5], ARGV[13], 1)
end
if ARGV[9] == '1' then
  if st == 'running' then redis.call('HINCRBY', KEYS[3], 'running', -1)
  elseif st == 'queued' then redis.call('HINCRBY', KEYS[3], 'queued', -1) end
  redis.call('HINCRBY', KEYS[3], ARGV[4] == 'waiting' and 'capacity' or 'waiting', 1)
  if ARGV[10] ~= '' then redis.call('HINCRBY', KEYS[3], ARGV[10], 1) end
end
return since
"""

# KEYS: job, deferred, batch, queue, waiting-by-endpoint. ARGV: job_id, new_token,
# message, has_batch, now, endpoint
_MOVE_DUE = """
if redis.call('ZREM', KEYS[2], ARGV[1]) == 0 then return 0 end
if redis.call('HINCRBY', KEYS[5], ARGV[6], -1) <= 0 then redis.call('HDEL', KEYS[5], ARGV[6]) end
local st = redis.call('HGET', KEYS[1], 'status')
if st ~= 'waiting' and st ~= 'retrying' then return 0 end
redis.call('HSET', KEYS[1], 'status', 'queued', 'token', ARGV[2], 'updated_at', ARGV[5])
if ARGV[4] == '1' then
  redis.call('HINCRBY', KEYS[3], st == 'waiting' and 'capacity' or 'waiting', -1)
  redis.call('HINCRBY', KEYS[3], 'queued', 1)
end
redis.call('LPUSH', KEYS[4], ARGV[3])
return 1
"""


def deferred_key(prefix: str) -> str:
    return f"{prefix}:deferred"


def waiting_key(prefix: str) -> str:
    """Hash: provider:model -> jobs waiting in the deferred set for it."""
    return f"{prefix}:waiting_by_endpoint"


def endpoint_of(spec: Dict[str, Any], target_index: int) -> str:
    targets = spec.get("targets") or ["mock:-"]
    return targets[min(target_index, len(targets) - 1)]


class Deferrer:
    """Puts jobs to wait in the sorted set, and moves due ones back to their queues."""

    def __init__(self, client: Any, keys: Any, app: Any = None):
        self.redis = client
        self.keys = keys
        self.app = app
        self.key = deferred_key(keys.prefix)
        self.waiting_key = waiting_key(keys.prefix)
        self._defer = client.register_script(_DEFER)
        self._move = client.register_script(_MOVE_DUE)
        self._builder: Any = None
        self._declared: set = set()

    def defer(self, job_id: str, token: str, *, due: float, status: str, target_index: int, attempt: int,
              batch_id: Optional[str], counter: str = "", rate_limited: bool = False,
              reason: str = "", endpoint: str = "") -> Optional[Tuple[int, float]]:
        """Park a job until `due`; None if this delivery no longer owns it, else waiting_since."""
        batch_key = self.keys.batch(batch_id) if batch_id else self.keys.batch("-")
        since = self._defer(
            keys=[self.keys.job(job_id), self.keys.inflight, batch_key, self.key, self.waiting_key],
            args=[time.time(), token, new_token(), status, target_index, attempt, due, job_id,
                  "1" if batch_id else "0", counter, "1" if rate_limited else "0", reason, endpoint],
        )
        since = since.decode() if isinstance(since, bytes) else since
        if not since:
            return None
        index, _, when = since.partition(":")
        return int(index), float(when)

    def waiting(self) -> int:
        return int(self.redis.zcard(self.key))

    def waiting_by_endpoint(self) -> Dict[str, int]:
        raw = self.redis.hgetall(self.waiting_key)
        return {(k.decode() if isinstance(k, bytes) else k): int(v) for k, v in raw.items() if int(v) > 0}

    def due_count(self, now: Optional[float] = None) -> int:
        return int(self.redis.zcount(self.key, "-inf", time.time() if now is None else now))

    def queue_for(self, spec: Dict[str, Any], target_index: int) -> str:
        targets = spec.get("targets") or ["mock:-"]
        provider = targets[min(target_index, len(targets) - 1)].split(":", 1)[0]
        return self.keys.queue(provider)

    def move_due(self, limit: int = MOVE_BATCH) -> int:
        """Move every due job (up to `limit`) back to its queue. Returns how many."""
        now = time.time()
        ids = [i.decode() if isinstance(i, bytes) else i
               for i in self.redis.zrangebyscore(self.key, "-inf", now, start=0, num=limit)]
        if not ids:
            return 0
        pipe = self.redis.pipeline(transaction=False)
        for job_id in ids:
            pipe.hmget(self.keys.job(job_id), "spec", "target_index", "attempt")
        rows = pipe.execute()
        builder = self._message_builder()
        pipe = self.redis.pipeline(transaction=False)
        queued: List[str] = []
        for job_id, (spec_raw, index_raw, attempt_raw) in zip(ids, rows):
            if not spec_raw:  # the record expired: nothing to run
                pipe.zrem(self.key, job_id)
                continue
            spec = json.loads(spec_raw)
            index, attempt = int(index_raw or 0), int(attempt_raw or 1)
            queue = self.queue_for(spec, index)
            self._declare(queue)
            token = new_token()
            message = builder.envelope(job_id, spec, token, queue, target_index=index, attempt=attempt)
            batch_id = spec.get("batch_id")
            batch_key = self.keys.batch(batch_id) if batch_id else self.keys.batch("-")
            # Back into its own lane's list (the message carries that priority).
            self._move(keys=[self.keys.job(job_id), self.key, batch_key, list_key(queue, lane_of(spec)),
                             self.waiting_key],
                       args=[job_id, token, message, "1" if batch_id else "0", now, endpoint_of(spec, index)],
                       client=pipe)
            queued.append(job_id)
        replies = execute_scripts(self.redis, pipe)
        return sum(1 for r in replies if r == 1)

    def _message_builder(self) -> Any:
        if self._builder is None:
            from .batch_submit import MessageBuilder

            self._builder = MessageBuilder(self.app)
        return self._builder

    def _declare(self, queue: str) -> None:
        if queue not in self._declared:
            self._message_builder().declare([queue])
            self._declared.add(queue)


class Mover:
    """A daemon thread per worker process: moves due waiting jobs back to their queues."""

    def __init__(self, deferrer: Deferrer, interval_s: float):
        self.deferrer = deferrer
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="promptq-mover", daemon=True)

    def start(self) -> "Mover":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                while self.deferrer.move_due() >= MOVE_BATCH:
                    pass  # a full round: more are due, go again at once
            except Exception as exc:  # the mover must outlive a Redis blip
                # Redis away or full: one line per try, not a traceback (tasks.redis_wait).
                logger.warning("deferred-job mover failed (%s: %s); will try again", type(exc).__name__,
                               str(exc)[:200], exc_info=not is_transient(exc))


__all__ = ["Deferrer", "Mover", "deferred_key"]
