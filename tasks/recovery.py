"""Handing back the messages of worker processes that died holding them.

With reliable fetch (tasks.reliable_fetch) every message a worker process
took and has not acknowledged sits in that process's processing list, and
the process heart-beats its list in `promptq:fetchers`. A list whose owner
stopped beating for `lease_ttl_s` belongs to a dead process: each message in
it is taken out (and out of kombu's `unacked` hash, so the visibility
timeout never brings it back), and its job, if that message still holds the
job's token and the job never started, is re-published under a fresh token.
A job that did start is the inflight reaper's (tasks.leases); a message
whose token is stale is simply dropped. Undecodable messages go to the
poison list.

Each message moves in one Lua call that first checks it is still the list's
oldest, so two workers recovering the same list never both re-publish it.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from typing import Any, Dict, List, Optional, Tuple

from .poison import move_to_poison
from .reliable_fetch import LIVE, fetchers_key
from .store import new_token

logger = logging.getLogger(__name__)

# KEYS: processing, unacked, unacked_index, job, inflight ; ARGV: item, tag,
#   msg_token, new_token, now, redeadline, job_id, batch_key_prefix, oldest_only
_RECOVER = """
if ARGV[9] == '1' then
  if redis.call('LINDEX', KEYS[1], -1) ~= ARGV[1] then return false end
  redis.call('RPOP', KEYS[1])
elseif redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then return false end
if ARGV[2] ~= '' then
  redis.call('HDEL', KEYS[2], ARGV[2])
  redis.call('ZREM', KEYS[3], ARGV[2])
end
if ARGV[7] == '' then return {0} end
local f = redis.call('HMGET', KEYS[4], 'status', 'token', 'spec', 'target_index', 'attempt')
if f[1] ~= 'queued' or f[2] ~= ARGV[3] then return {0} end
redis.call('HSET', KEYS[4], 'token', ARGV[4], 'updated_at', ARGV[5])
redis.call('ZADD', KEYS[5], ARGV[6], ARGV[7])
local ok, spec = pcall(cjson.decode, f[3])
if ok and type(spec) == 'table' and type(spec['batch_id']) == 'string' then
  redis.call('HINCRBY', ARGV[8] .. spec['batch_id'], 'recovered', 1)
end
return {1, f[3], f[4], f[5]}
"""

# KEYS: fetchers, processing ; ARGV: the beat seen as stale
_FORGET = """
if redis.call('HGET', KEYS[1], KEYS[2]) == ARGV[1] and redis.call('LLEN', KEYS[2]) == 0 then
  redis.call('HDEL', KEYS[1], KEYS[2])
  return 1
end
return 0
"""


def describe(item: bytes) -> Tuple[str, str, str]:
    """(delivery tag, job id, token) of a run_job message in kombu's envelope; ValueError if unreadable."""
    envelope = json.loads(item)
    if not isinstance(envelope, dict):
        raise ValueError("not a JSON object")
    tag = (envelope.get("properties") or {}).get("delivery_tag") or ""
    headers = envelope.get("headers") or {}
    body = envelope.get("body")
    if (envelope.get("properties") or {}).get("body_encoding") == "base64":
        body = base64.b64decode(body, validate=True)
    args, kwargs, _ = json.loads(body)
    job_id = headers.get("id") or (args[0] if args else "")
    token = (kwargs or {}).get("token", "")
    if not isinstance(job_id, str) or not isinstance(token, str):
        raise ValueError("job id or token is not a string")
    return str(tag), job_id, token


def _on_promptq_queue(item: bytes, prefix: str) -> bool:
    """True unless the item is a readable envelope routed to a queue that is not promptq's."""
    try:
        routing_key = json.loads(item)["properties"]["delivery_info"]["routing_key"]
    except Exception:  # noqa: BLE001 - unreadable: it came from a promptq queue's consumer
        return True
    return not isinstance(routing_key, str) or routing_key.startswith(f"{prefix}.")


class FetchRecovery:
    """Finds dead processes' processing lists and re-publishes their jobs."""

    def __init__(self, runtime: Any):
        self.runtime = runtime
        self.redis = runtime.store.redis
        self.keys = runtime.keys
        self._recover = self.redis.register_script(_RECOVER)
        self._forget = self.redis.register_script(_FORGET)
        self._orphans_seen: set = set()

    def dead_lists(self, now: float, lease_ttl_s: float, own: str) -> List[Tuple[str, bytes]]:
        beats = self.redis.hgetall(fetchers_key(self.keys.prefix))
        return [
            (k.decode(), v) for k, v in beats.items()
            if k.decode() != own and now - float(v) > lease_ttl_s
        ]

    def recover(self, now: float, lease_ttl_s: float, own: str) -> List[Dict[str, Any]]:
        """Jobs re-claimed from dead processes (each to be re-published by the caller)."""
        claimed: List[Dict[str, Any]] = []
        for key, beat in self.dead_lists(now, lease_ttl_s, own):
            while True:
                item = self.redis.lindex(key, -1)
                if item is None:
                    self._forget(keys=[fetchers_key(self.keys.prefix), key], args=[beat])
                    break
                job = self._recover_one(key, item, lease_ttl_s)
                if job:
                    claimed.append(job)
        return claimed

    def recover_own(self, own: str, lease_ttl_s: float) -> List[Dict[str, Any]]:
        """Messages in this process's own list that no open channel holds any more.

        Cheap when nothing is lost (one LLEN). A message must be seen
        untracked on two beats in a row: one just moved into the list is
        tracked a moment later.
        """
        if self.redis.llen(own) <= len(LIVE):
            self._orphans_seen = set()
            return []
        live = set(LIVE.values())
        orphans = {item for item in self.redis.lrange(own, 0, -1) if item not in live}
        ripe, self._orphans_seen = orphans & self._orphans_seen, orphans
        claimed = []
        for item in ripe:
            job = self._recover_one(own, item, lease_ttl_s, oldest_only=False)
            if job:
                claimed.append(job)
        return claimed

    def _recover_one(self, key: str, item: bytes, lease_ttl_s: float, oldest_only: bool = True) -> Optional[Dict[str, Any]]:
        try:
            tag, job_id, token = describe(item)
        except Exception as exc:  # noqa: BLE001 - unreadable: set it aside, never retry it
            pipe = self.redis.pipeline(transaction=True)
            if _on_promptq_queue(item, self.keys.prefix):
                move_to_poison(pipe, self.keys.prefix, item, queue=None, reason=exc)
            # else: not ours (a control reply caught mid-flight): dropped
            pipe.lrem(key, -1, item)
            pipe.execute()
            return None
        fresh = new_token()
        reply = self._recover(
            keys=[key, "unacked", "unacked_index", self.keys.job(job_id), self.keys.inflight],
            args=[item, tag, token, fresh, time.time(), time.time() + lease_ttl_s, job_id, self.keys.batch(""),
                  "1" if oldest_only else "0"],
        )
        if not reply or not int(reply[0]):
            return None
        spec, target_index, attempt = (v.decode() if isinstance(v, bytes) else v for v in reply[1:])
        logger.warning("job %s: its worker died after fetching it; re-queued", job_id)
        return {"id": job_id, "token": fresh, "spec": json.loads(spec), "target_index": int(target_index or 0),
                "attempt": int(attempt or 1), "status": "queued"}
