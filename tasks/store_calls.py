"""The producer's store calls as data: which Lua script, with which keys and arguments.

Sans-I/O: nothing here talks to Redis. `JobStore` (sync, used by workers and
`Client`) and `AsyncClient` (redis.asyncio) both run these same calls, so a
submit or a cancel changes a record identically whichever shell issued it.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Dict, Optional, Sequence, Tuple

from .json_check import JSONValueError, check_json
from .keys import Keys


@dataclass(frozen=True)
class ScriptCall:
    """One EVALSHA to make: the script's source, its KEYS and its ARGV."""

    source: str
    keys: Sequence[str]
    args: Sequence[Any]


# One body, three entry points. With its message in the same script (no
# inflight entry: `Client.submit`, and many at once for `submit_batch`), or
# alone (`JobStore.create`): then the record sits in inflight with a
# deadline until its sender, having sent the message separately, calls
# `release`; a sender that dies in between loses nothing, a reaper sends
# it instead.
_CREATE_FN = """
local function create(job, batch, inflight, now, token, spec, target_index, has_batch, deadline, id)
  if redis.call('EXISTS', job) == 1 then return 0 end
  redis.call('HSET', job, 'status', 'queued', 'token', token, 'spec', spec,
             'target_index', target_index, 'attempt', '1', 'created_at', now, 'updated_at', now)
  if deadline ~= '' then redis.call('ZADD', inflight, deadline, id) end
  if has_batch == '1' then redis.call('HINCRBY', batch, 'queued', 1) end
  return 1
end
"""
# KEYS: job, batch, inflight ; ARGV: now, token, spec, target_index, has_batch, deadline, job_id
_CREATE = _CREATE_FN + """
return create(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7])
"""
# A producer's one job: the record and its message in one script, so there
# is no moment when one exists without the other and nothing for a reaper
# to finish (no inflight entry, no release). The message is the last
# argument, the list it goes on the last key: `tasks.message_send` appends
# both once it has built the envelope.
# KEYS: job, batch, list ; ARGV: now, token, spec, target_index, has_batch, job_id, message
_CREATE_AND_PUSH = _CREATE_FN + """
if create(KEYS[1], KEYS[2], '', ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], '', ARGV[6]) == 0 then return 0 end
redis.call('LPUSH', KEYS[3], ARGV[7])
return 1
"""
# Many records of one batch, each with its message, in one call: a record
# that already existed (a resumed submission) gets no second message. Each
# list's messages go in one LPUSH, in line order (LPUSH k a b c leaves what
# LPUSH k a; LPUSH k b; LPUSH k c would).
# KEYS: batch, then per job: its record, the list its message goes on
# ARGV: now, target_index, has_batch, then per job: token, spec, job_id, message. Answers 1 or 0 per job.
_CREATE_MANY = _CREATE_FN + """
local out, lists, order = {}, {}, {}
for i = 2, #KEYS, 2 do
  local a = 4 + (i - 2) * 2
  local made = create(KEYS[i], KEYS[1], '', ARGV[1], ARGV[a], ARGV[a + 1], ARGV[2], ARGV[3], '', ARGV[a + 2])
  out[#out + 1] = made
  if made == 1 then
    local key = KEYS[i + 1]
    if not lists[key] then lists[key] = {}; order[#order + 1] = key end
    local pending = lists[key]
    pending[#pending + 1] = ARGV[a + 3]
  end
end
for _, key in ipairs(order) do redis.call('LPUSH', key, unpack(lists[key])) end
return out
"""

# KEYS: job, inflight, batch, attempts, seq ; ARGV: now, job_id, has_batch, ttl
_CANCEL = """
local st = redis.call('HGET', KEYS[1], 'status')
if not st then return 'missing' end
if st == 'queued' or st == 'retrying' or st == 'waiting' then
  redis.call('HSET', KEYS[1], 'status', 'cancelled', 'token', '', 'finished_at', ARGV[1], 'updated_at', ARGV[1])
  redis.call('ZREM', KEYS[2], ARGV[2])
  local ttl = tonumber(ARGV[4])
  redis.call('EXPIRE', KEYS[1], ttl)
  redis.call('EXPIRE', KEYS[4], ttl)
  redis.call('EXPIRE', KEYS[5], ttl)
  if ARGV[3] == '1' then
    redis.call('HINCRBY', KEYS[3], st == 'queued' and 'queued' or (st == 'waiting' and 'capacity' or 'waiting'), -1)
    redis.call('HINCRBY', KEYS[3], 'cancelled', 1)
    redis.call('EXPIRE', KEYS[3], ttl * 2)
    redis.call('EXPIRE', KEYS[3] .. ':jobs', ttl * 2)
  end
  return 'cancelled'
end
if st == 'running' then redis.call('HSET', KEYS[1], 'cancel_requested', '1') return 'requested' end
return st
"""

# KEYS: job, inflight ; ARGV: token, job_id
_RELEASE = """
if redis.call('HGET', KEYS[1], 'token') == ARGV[1] and redis.call('HGET', KEYS[1], 'status') == 'queued' then
  redis.call('ZREM', KEYS[2], ARGV[2])
  return 1
end
return 0
"""


def _encoded(spec: Dict[str, Any]) -> str:
    try:
        check_json(spec, "job")
        return json.dumps(spec, allow_nan=False)
    except (ValueError, TypeError) as exc:
        raise JSONValueError("job", f"cannot be stored: {exc}") from None


class StoreCalls:
    """Builds the store's producer-side script calls for one key prefix and TTL."""

    def __init__(self, keys: Keys, result_ttl_s: float):
        self.keys = keys
        self.result_ttl_s = max(1, int(result_ttl_s))

    def _batch_key(self, batch_id: Optional[str]) -> Tuple[str, str]:
        return (self.keys.batch(batch_id), "1") if batch_id else (self.keys.batch("-"), "0")

    def create(self, spec: Dict[str, Any], token: str, target_index: int = 0,
               send_deadline_s: float = 30.0) -> ScriptCall:
        """Answers 1 if the record was written, 0 if one existed."""
        batch_key, has_batch = self._batch_key(spec.get("batch_id"))
        now = time.time()
        return ScriptCall(
            _CREATE,
            [self.keys.job(spec["id"]), batch_key, self.keys.inflight],
            [now, token, _encoded(spec), target_index, has_batch, now + send_deadline_s, spec["id"]],
        )

    def create_and_push(self, spec: Dict[str, Any], token: str, target_index: int = 0) -> ScriptCall:
        """`create`, and the job's message pushed in the same script; answers 1, or 0 if a record existed.

        Its last key (the lane's list) and last argument (the message) are
        the sender's to append (`tasks.message_send.JobSender.command`).
        """
        batch_key, has_batch = self._batch_key(spec.get("batch_id"))
        return ScriptCall(_CREATE_AND_PUSH, [self.keys.job(spec["id"]), batch_key],
                          [time.time(), token, _encoded(spec), target_index, has_batch, spec["id"]])

    def cancel(self, job_id: str, batch_id: Optional[str] = None) -> ScriptCall:
        """Answers 'cancelled', 'requested' (running), 'missing' or the final status."""
        batch_key, has_batch = self._batch_key(batch_id)
        return ScriptCall(
            _CANCEL,
            [self.keys.job(job_id), self.keys.inflight, batch_key, self.keys.attempts(job_id), self.keys.seq(job_id)],
            [time.time(), job_id, has_batch, self.result_ttl_s],
        )

    def create_many(self, specs: Sequence[Dict[str, Any]], tokens: Sequence[str], batch_id: Optional[str],
                    messages: Sequence[Tuple[str, str]], encoded: Optional[Sequence[str]] = None) -> ScriptCall:
        """Many records of one batch (target 0), each new one with its message, in one call.

        `messages`: per spec, (the list it goes on, the message). Answers 1
        (created and sent) or 0 (it existed: nothing sent) per spec.
        `encoded`: the specs as JSON already, from a caller that validated
        every one (`JobSpec.validate`, as `submit_batch` does each line)."""
        batch_key, has_batch = self._batch_key(batch_id)
        args: list = [time.time(), 0, has_batch]
        keys: list = [batch_key]
        texts = encoded if encoded is not None else [_encoded(spec) for spec in specs]
        for spec, token, text, (list_name, message) in zip(specs, tokens, texts, messages):
            keys += [self.keys.job(spec["id"]), list_name]
            args += [token, text, spec["id"], message]
        return ScriptCall(_CREATE_MANY, keys, args)

    def release(self, job_id: str, token: str) -> ScriptCall:
        """Answers 1 if the job left inflight (its message is sent and it is still queued)."""
        return ScriptCall(_RELEASE, [self.keys.job(job_id), self.keys.inflight], [token, job_id])
