"""Job records in Redis, and the atomic state changes that keep them honest.

A record is a hash under `Keys.job(id)`. Its `token` names the one queue
message allowed to run the job now: every publish (submit, retry, failover,
recovery) writes a fresh token first, and a worker may run a message only
if the tokens match. That is what makes redelivery safe: a message Redis
restores after its visibility timeout, or a copy re-queued from a dead
worker, carries a stale token and is dropped instead of calling a provider
twice; a job whose result exists is never run again.

Running jobs sit in the `inflight` sorted set with a deadline their worker
keeps pushing forward; a deadline that passes means the worker died, and
`reap()` hands the job back to the queue.
"""

from __future__ import annotations

import json
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .keys import Keys
from .record import TERMINAL, JobRecord, JobStatus, new_token, record_from_replies
from .store_calls import _CANCEL, _CREATE, _CREATE_MANY, _RELEASE, StoreCalls

__all__ = ["TERMINAL", "JobRecord", "JobStatus", "JobStore", "new_token"]

# A batch job does not start once its batch spent its limit (`max_cost_nusd`,
# tasks.pricing): the caller then cancels it ('halted'), calling no provider.
# KEYS: job, inflight, batch ; ARGV: now, token, deadline, worker, job_id, has_batch
_START = """
-- One read (a batch job's also reads its spend), one write: this runs for every delivery.
local f = redis.call('HMGET', KEYS[1], 'status', 'token', 'started_at')
local st = f[1]
if not st then return 'missing' end
if st == 'succeeded' or st == 'failed' or st == 'cancelled' then return 'terminal' end
if f[2] ~= ARGV[2] then return 'stale' end
if ARGV[6] == '1' then
  local spend = redis.call('HMGET', KEYS[3], 'max_cost_nusd', 'cost_nusd')
  if spend[1] and (tonumber(spend[2]) or 0) >= tonumber(spend[1]) then return 'halted' end
end
if st ~= 'running' and ARGV[6] == '1' then
  redis.call('HINCRBY', KEYS[3], 'running', 1)
  if st == 'queued' then redis.call('HINCRBY', KEYS[3], 'queued', -1) end
  if st == 'retrying' then redis.call('HINCRBY', KEYS[3], 'waiting', -1) end
end
if f[3] then
  redis.call('HSET', KEYS[1], 'status', 'running', 'worker', ARGV[4], 'updated_at', ARGV[1])
else  -- the first start of this job: started_at stays that of the first
  redis.call('HSET', KEYS[1], 'status', 'running', 'worker', ARGV[4], 'updated_at', ARGV[1], 'started_at', ARGV[1])
end
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[5])
return 'run'
"""

# Move a running job on: to a retry (status retrying, deadline = when it is
# due plus grace) or to another queue (status queued, out of inflight: the
# broker holds it durably). Only the holder of the current token may.
# KEYS: job, inflight, batch ; ARGV: now, token, new_token, status, target_index,
#   attempt, deadline ('' = remove from inflight), job_id, has_batch, counter
_MOVE = """
if redis.call('HGET', KEYS[1], 'token') ~= ARGV[2] then return 0 end
local st = redis.call('HGET', KEYS[1], 'status')
if st == 'succeeded' or st == 'failed' or st == 'cancelled' then return 0 end
redis.call('HSET', KEYS[1], 'status', ARGV[4], 'token', ARGV[3], 'target_index', ARGV[5],
           'attempt', ARGV[6], 'updated_at', ARGV[1])
if ARGV[7] == '' then redis.call('ZREM', KEYS[2], ARGV[8])
else redis.call('ZADD', KEYS[2], ARGV[7], ARGV[8]) end
if ARGV[9] == '1' then
  if st == 'running' then redis.call('HINCRBY', KEYS[3], 'running', -1) end
  redis.call('HINCRBY', KEYS[3], ARGV[4] == 'retrying' and 'waiting' or 'queued', 1)
  if ARGV[10] ~= '' then redis.call('HINCRBY', KEYS[3], ARGV[10], 1) end
end
return 1
"""

# A success is kept even from a worker that lost its token (it stalled and
# was presumed dead): the answer is real and was paid for. First one wins.
# The seq key's TTL is left alone when an event of this job follows in the
# same round trip (ARGV[11] = '1'): the events script sets it whenever the
# key exists, so an EXPIRE here would be overwritten at once.
# KEYS: job, inflight, batch, attempts, seq ; ARGV: now, status, field, payload,
#   ttl, job_id, has_batch, input_tokens, output_tokens, token ('' = any), event_follows, cost_nusd
_FINISH = """
local f = redis.call('HMGET', KEYS[1], 'status', 'token')
local st = f[1]
if not st or st == 'succeeded' or st == 'failed' or st == 'cancelled' then return 0 end
if ARGV[10] ~= '' and f[2] ~= ARGV[10] then return 0 end
redis.call('HSET', KEYS[1], 'status', ARGV[2], ARGV[3], ARGV[4], 'finished_at', ARGV[1],
           'updated_at', ARGV[1], 'token', '')
redis.call('ZREM', KEYS[2], ARGV[6])
local ttl = tonumber(ARGV[5])
redis.call('EXPIRE', KEYS[1], ttl)
redis.call('EXPIRE', KEYS[4], ttl)
if ARGV[11] ~= '1' then redis.call('EXPIRE', KEYS[5], ttl) end
if ARGV[7] == '1' then
  if st == 'running' then redis.call('HINCRBY', KEYS[3], 'running', -1)
  elseif st == 'retrying' then redis.call('HINCRBY', KEYS[3], 'waiting', -1)
  elseif st == 'waiting' then redis.call('HINCRBY', KEYS[3], 'capacity', -1)
  else redis.call('HINCRBY', KEYS[3], 'queued', -1) end
  redis.call('HINCRBY', KEYS[3], ARGV[2], 1)
  redis.call('HINCRBY', KEYS[3], 'input_tokens', tonumber(ARGV[8]) or 0)
  redis.call('HINCRBY', KEYS[3], 'output_tokens', tonumber(ARGV[9]) or 0)
  -- Nano-dollars (tasks.pricing), only where the job cost something.
  if ARGV[12] ~= '0' then redis.call('HINCRBY', KEYS[3], 'cost_nusd', ARGV[12]) end
  -- A batch outlives its records (so `batch results` can say "expired"),
  -- then goes too: each finish pushes its expiry to twice the records' TTL.
  redis.call('EXPIRE', KEYS[3], ttl * 2)
  redis.call('EXPIRE', KEYS[3] .. ':jobs', ttl * 2)
end
return 1
"""


# Claim jobs whose deadline passed: give each a fresh token (so the lost
# message is stale if it ever comes back), mark it queued, and set a short
# new deadline (so if this reaper dies before re-publishing, another reaper
# tries again; `release` takes it out of inflight once it is re-published).
# KEYS: inflight ; ARGV: now, limit, token_prefix, job_key_prefix, redeadline,
#   batch_key_prefix
_REAP = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local out = {}
for i, id in ipairs(ids) do
  local key = ARGV[4] .. id
  local st = redis.call('HGET', key, 'status')
  if not st or st == 'succeeded' or st == 'failed' or st == 'cancelled' then
    redis.call('ZREM', KEYS[1], id)
  else
    local token = ARGV[3] .. i
    local f = redis.call('HMGET', key, 'spec', 'target_index', 'attempt')
    redis.call('HSET', key, 'token', token, 'status', 'queued', 'updated_at', ARGV[1])
    redis.call('ZADD', KEYS[1], ARGV[5], id)
    local ok, spec = pcall(cjson.decode, f[1])
    if ok and type(spec) == 'table' and type(spec['batch_id']) == 'string' then
      local bkey = ARGV[6] .. spec['batch_id']
      if st == 'running' then redis.call('HINCRBY', bkey, 'running', -1)
      elseif st == 'retrying' then redis.call('HINCRBY', bkey, 'waiting', -1)
      else redis.call('HINCRBY', bkey, 'queued', -1) end
      redis.call('HINCRBY', bkey, 'queued', 1)
      redis.call('HINCRBY', bkey, 'recovered', 1)
    end
    table.insert(out, {id, token, f[1], f[2], f[3], st})
  end
end
return out
"""

# The old replay ends with an `error` event; a follower of the new run must
# not stop there, so it is deleted (the seq counter stays: numbers keep rising).
# KEYS: job, dead, batch, attempts, replay ; ARGV: now, token, job_id, has_batch
_REQUEUE = """
if redis.call('HGET', KEYS[1], 'status') ~= 'failed' then return 0 end
redis.call('HSET', KEYS[1], 'status', 'queued', 'token', ARGV[2], 'target_index', '0', 'attempt', '1',
           'updated_at', ARGV[1])
redis.call('HDEL', KEYS[1], 'error', 'finished_at', 'cancel_requested')
redis.call('PERSIST', KEYS[1])
redis.call('PERSIST', KEYS[4])
redis.call('DEL', KEYS[5])
redis.call('LREM', KEYS[2], 0, ARGV[3])
if ARGV[4] == '1' then
  redis.call('HINCRBY', KEYS[3], 'failed', -1)
  redis.call('HINCRBY', KEYS[3], 'queued', 1)
end
return 1
"""



class JobStore:
    """Reads and changes job records; every multi-key change is one Lua call."""

    def __init__(self, client: Any, keys: Keys, result_ttl_s: float = 7 * 24 * 3600.0):
        self.redis = client
        self.keys = keys
        self.result_ttl_s = max(1, int(result_ttl_s))
        self.calls = StoreCalls(keys, result_ttl_s)
        self._create = client.register_script(_CREATE)
        self._start = client.register_script(_START)
        self._move = client.register_script(_MOVE)
        self._finish = client.register_script(_FINISH)
        self._cancel = client.register_script(_CANCEL)
        self._reap = client.register_script(_REAP)
        self._release = client.register_script(_RELEASE)
        self._create_many = client.register_script(_CREATE_MANY)
        self._requeue = client.register_script(_REQUEUE)

    def _batch_key(self, batch_id: Optional[str]) -> Tuple[str, str]:
        return (self.keys.batch(batch_id), "1") if batch_id else (self.keys.batch("-"), "0")

    # --- producer side --------------------------------------------------

    def create(
        self, spec: Dict[str, Any], token: str, target_index: int = 0, client: Any = None,
        send_deadline_s: float = 30.0,
    ) -> bool:
        """Write a new record; False if one exists (a resubmitted batch line).

        The caller sends the message, then calls `release`; until then the
        job is in inflight, so a crash in between is recovered by a reaper.
        """
        call = self.calls.create(spec, token, target_index, send_deadline_s)
        return bool(self._create(keys=call.keys, args=call.args, client=client))

    def create_many(self, specs: List[Dict[str, Any]], tokens: List[str], batch_id: Optional[str], pipe: Any,
                    messages: List[Tuple[str, str]], encoded: Optional[List[str]] = None) -> None:
        """Records of one batch, each new one with its message (list, text), as one call queued on
        `pipe`; its reply lists 1/0 per spec."""
        call = self.calls.create_many(specs, tokens, batch_id, messages, encoded)
        self._create_many(keys=call.keys, args=call.args, client=pipe)

    def cancel(self, job_id: str, batch_id: Optional[str] = None, pipe: Any = None) -> Optional[str]:
        """'cancelled', 'requested' (running), 'missing' or the final status; None when queued on `pipe`."""
        call = self.calls.cancel(job_id, batch_id)
        result = self._cancel(keys=call.keys, args=call.args, client=pipe)
        if pipe is not None:
            return None
        return result.decode() if isinstance(result, bytes) else str(result)

    def get(self, job_id: str) -> Optional[JobRecord]:
        pipe = self.redis.pipeline(transaction=False)
        pipe.hgetall(self.keys.job(job_id))
        pipe.lrange(self.keys.attempts(job_id), 0, -1)
        fields, attempts = pipe.execute()
        return record_from_replies(job_id, fields, attempts)

    def status(self, job_id: str) -> Optional[JobStatus]:
        value = self.redis.hget(self.keys.job(job_id), "status")
        return JobStatus(value.decode() if isinstance(value, bytes) else value) if value else None

    # --- worker side ----------------------------------------------------

    def start(self, job_id: str, token: str, worker: str, lease_ttl_s: float, batch_id: Optional[str],
              pipe: Any = None) -> Optional[str]:
        """'run' if this message may run the job; else why not (None inside
        a pipeline: read its reply with `start_verdict`)."""
        batch_key, has_batch = self._batch_key(batch_id)
        now = time.time()
        result = self._start(
            keys=[self.keys.job(job_id), self.keys.inflight, batch_key],
            args=[now, token, now + lease_ttl_s, worker, job_id, has_batch],
            client=pipe,
        )
        return None if pipe is not None else start_verdict(result)

    def move(
        self,
        job_id: str,
        token: str,
        new_token: str,
        *,
        status: JobStatus,
        target_index: int,
        attempt: int,
        deadline: Optional[float],
        batch_id: Optional[str],
        counter: str = "",
    ) -> bool:
        batch_key, has_batch = self._batch_key(batch_id)
        return bool(
            self._move(
                keys=[self.keys.job(job_id), self.keys.inflight, batch_key],
                args=[time.time(), token, new_token, status.value, target_index, attempt,
                      "" if deadline is None else deadline, job_id, has_batch, counter],
            )
        )

    def finish(
        self,
        job_id: str,
        *,
        status: JobStatus,
        payload: Dict[str, Any],
        batch_id: Optional[str],
        token: str = "",
        usage: Optional[Dict[str, Any]] = None,
        cost_nano: int = 0,
        pipe: Any = None,
        event_follows: bool = False,
    ) -> Any:
        """Record the end of a job. With `token`, only its holder may (failures).

        `event_follows`: the caller queued an event of this job after this
        call on the same `pipe` (tasks.events sets the seq key's TTL then)."""
        batch_key, has_batch = self._batch_key(batch_id)
        usage = usage or {}
        return self._finish(
            keys=[self.keys.job(job_id), self.keys.inflight, batch_key, self.keys.attempts(job_id), self.keys.seq(job_id)],
            args=[time.time(), status.value, "result" if status == JobStatus.SUCCEEDED else "error",
                  json.dumps(payload), self.result_ttl_s, job_id, has_batch,
                  usage.get("input_tokens") or 0, usage.get("output_tokens") or 0, token,
                  "1" if event_follows and pipe is not None else "0", int(cost_nano)],
            client=pipe,
        )

    def add_attempt(self, job_id: str, attempt: Dict[str, Any], pipe: Any = None) -> None:
        target = pipe if pipe is not None else self.redis
        target.rpush(self.keys.attempts(job_id), json.dumps(attempt))

    def cancel_requested(self, job_id: str) -> bool:
        return bool(self.redis.hget(self.keys.job(job_id), "cancel_requested"))

    def refresh(self, job_ids: Sequence[str], deadline: float) -> None:
        """Push running jobs' deadlines forward (the worker's heartbeat)."""
        if job_ids:
            # XX: never resurrect an entry that finished or was reaped meanwhile.
            self.redis.zadd(self.keys.inflight, {jid: deadline for jid in job_ids}, xx=True)

    def reap(self, limit: int = 100, redeadline_s: float = 30.0) -> List[Dict[str, Any]]:
        """Claim jobs whose worker stopped checking in; the caller re-publishes them."""
        now = time.time()
        rows = self._reap(
            keys=[self.keys.inflight],
            args=[now, limit, new_token()[:16] + "-", self.keys.job(""), now + redeadline_s, self.keys.batch("")],
        )
        claimed = []
        for row in rows:
            job_id, token, spec, target_index, attempt, status = (
                v.decode() if isinstance(v, bytes) else v for v in row
            )
            claimed.append(
                {"id": job_id, "token": token, "spec": json.loads(spec), "target_index": int(target_index or 0),
                 "attempt": int(attempt or 1), "status": status}
            )
        return claimed

    def release(self, job_id: str, token: str, pipe: Any = None) -> bool:
        """After a reaped job was re-published: out of inflight, the broker holds it.

        With `pipe`, the call is queued on that pipeline (its answer comes
        from `pipe.execute()`; this returns True).
        """
        call = self.calls.release(job_id, token)
        return bool(self._release(keys=call.keys, args=call.args, client=pipe))

    def requeue_failed(self, job_id: str, token: str, batch_id: Optional[str]) -> bool:
        """Give a dead-lettered job a fresh start on its first target; False if it is not failed."""
        batch_key, has_batch = self._batch_key(batch_id)
        return bool(
            self._requeue(
                keys=[self.keys.job(job_id), self.keys.dead_letter, batch_key, self.keys.attempts(job_id),
                      self.keys.events(job_id)],
                args=[time.time(), token, job_id, has_batch],
            )
        )

    def dead_letters(self, limit: int = 100) -> List[str]:
        ids = self.redis.lrange(self.keys.dead_letter, 0, limit - 1)
        return [i.decode() if isinstance(i, bytes) else i for i in ids]


def start_verdict(reply: Any) -> str:
    """`JobStore.start`'s answer from its raw reply."""
    if isinstance(reply, Exception):
        raise reply
    return reply.decode() if isinstance(reply, bytes) else str(reply)
