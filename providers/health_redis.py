"""Provider health shared by every worker, kept in Redis.

The same record and transitions as `health.InMemoryHealthStore`, applied by
Lua scripts so each update is atomic however many worker processes (on
however many hosts) report at once. Keys, for provider P under `prefix`::

    {prefix}:provider:P          hash: counters, last error, opened_at, retry_at
    {prefix}:provider:P:errors   hash: category -> count
    {prefix}:provider:P:probe    string: the half-open probe claim (SET NX PX)
    {prefix}:index               set: every provider seen (all_snapshots)

Time is the caller's wall clock (`time.time`, injectable), passed into the
scripts, because workers on different hosts compare `retry_at` against it.
The probe claim expires by Redis's own clock after `probe_timeout_s`, so a
worker that dies mid-probe never wedges the circuit half-open.

If Redis itself fails, the store fails open: `allow_request` answers True
and outcomes are logged, not raised, so a health-store outage never turns
into a provider outage. `snapshot` does raise: an operator asked.

redis-py is imported here only, never by `providers/__init__`.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any, Dict, Optional

import redis

from .health import (
    Clock,
    HealthPolicy,
    HealthRecord,
    HealthSnapshot,
    HealthStore,
    _policy,
    counts_toward_circuit,
    derive_snapshot,
    error_category,
    error_message,
)

logger = logging.getLogger(__name__)

# KEYS: record, errors, probe, index.  ARGV: provider, now, latency_s or "".
# Runs after every successful call: one read, one write and the latency sum
# while the circuit is closed; the rest only when there is something to do.
# - The index loses a provider only together with its record (`reset`
#   deletes both; Redis runs noeviction), so a record that counted a
#   success before is indexed already.
# - A probe claim exists only while retry_at does (`_ALLOW_REQUEST` sets it
#   only then; whatever deletes retry_at deletes the claim too).
# - latency_total_s keeps HINCRBYFLOAT: Redis's long-double sum and its
#   formatting are not Lua's.
_RECORD_SUCCESS = """
local f = redis.call('HMGET', KEYS[1], 'successes', 'opened_at', 'retry_at', 'latency_count')
if not f[1] then redis.call('SADD', KEYS[4], ARGV[1]) end
local set = {'successes', (tonumber(f[1]) or 0) + 1, 'consecutive', 0, 'last_success_at', ARGV[2]}
if ARGV[3] ~= '' then
  set[#set + 1] = 'latency_count'; set[#set + 1] = (tonumber(f[4]) or 0) + 1
  set[#set + 1] = 'last_latency_s'; set[#set + 1] = ARGV[3]
end
redis.call('HSET', KEYS[1], unpack(set))
if ARGV[3] ~= '' then redis.call('HINCRBYFLOAT', KEYS[1], 'latency_total_s', ARGV[3]) end
local was_open = (f[2] and 1 or 0) + (f[3] and 1 or 0)
if was_open > 0 then
  redis.call('HDEL', KEYS[1], 'opened_at', 'retry_at')
  redis.call('DEL', KEYS[3])
end
return was_open
"""

# KEYS: record, errors, probe, index.
# ARGV: provider, now, category, message, trips ('1'/'0'), threshold, retry_at if (re)opened.
_RECORD_FAILURE = """
redis.call('SADD', KEYS[4], ARGV[1])
redis.call('HINCRBY', KEYS[1], 'failures', 1)
redis.call('HINCRBY', KEYS[2], ARGV[3], 1)
redis.call('HSET', KEYS[1], 'last_error_category', ARGV[3], 'last_error_message', ARGV[4],
           'last_error_at', ARGV[2])
local now = tonumber(ARGV[2])
local retry_at = redis.call('HGET', KEYS[1], 'retry_at')
local half_open = retry_at and now >= tonumber(retry_at)
if ARGV[5] ~= '1' then
  if half_open then redis.call('DEL', KEYS[3]) end
  return 'counted'
end
local consecutive = redis.call('HINCRBY', KEYS[1], 'consecutive', 1)
redis.call('HSET', KEYS[1], 'last_failure_at', ARGV[2])
if half_open or ((not retry_at) and consecutive >= tonumber(ARGV[6])) then
  redis.call('HSET', KEYS[1], 'opened_at', ARGV[2], 'retry_at', ARGV[7])
  redis.call('DEL', KEYS[3])
  return 'opened'
end
return 'counted'
"""

# KEYS: record, probe.  ARGV: now, claim token, probe timeout in ms.
# Returns 1 (closed: go), 2 (half-open: the probe is claimed, go) or 0.
_ALLOW_REQUEST = """
local retry_at = redis.call('HGET', KEYS[1], 'retry_at')
if not retry_at then return 1 end
if tonumber(ARGV[1]) < tonumber(retry_at) then return 0 end
if redis.call('SET', KEYS[2], ARGV[2], 'NX', 'PX', ARGV[3]) then return 2 end
return 0
"""

# KEYS: probe ; ARGV: token. A probe claimed for a call that was not made.
_RELEASE_PROBE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

_INT_FIELDS = ("successes", "failures", "consecutive", "latency_count")
_FLOAT_FIELDS = (
    "last_error_at",
    "last_success_at",
    "last_failure_at",
    "opened_at",
    "retry_at",
    "latency_total_s",
    "last_latency_s",
)


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _record_from_hash(raw: Dict[Any, Any], errors: Dict[Any, Any]) -> HealthRecord:
    data = {_text(k): _text(v) for k, v in raw.items()}
    record = HealthRecord()
    for name in _INT_FIELDS:
        if name in data:
            setattr(record, name, int(float(data[name])))
    for name in _FLOAT_FIELDS:
        if name in data:
            setattr(record, name, float(data[name]))
    record.last_error_category = data.get("last_error_category")
    record.last_error_message = data.get("last_error_message")
    record.errors_by_category = {_text(k): int(_text(v)) for k, v in errors.items()}
    return record


class RedisHealthStore(HealthStore):
    """A `HealthStore` every worker shares through one Redis."""

    def __init__(
        self,
        redis_client: "redis.Redis",
        prefix: str = "promptq:health",
        policy: Optional[HealthPolicy] = None,
        *,
        clock: Clock = time.time,
        **overrides: Any,
    ):
        self.redis = redis_client
        self.prefix = prefix.rstrip(":")
        self.policy = _policy(policy, overrides)
        self.clock = clock
        self._success = redis_client.register_script(_RECORD_SUCCESS)
        self._failure = redis_client.register_script(_RECORD_FAILURE)
        self._allow = redis_client.register_script(_ALLOW_REQUEST)
        self._release = redis_client.register_script(_RELEASE_PROBE)

    @classmethod
    def from_url(cls, url: str, prefix: str = "promptq:health", **kwargs: Any) -> "RedisHealthStore":
        return cls(redis.Redis.from_url(url), prefix, **kwargs)

    # --- keys -----------------------------------------------------------------

    def _key(self, provider: str, suffix: str = "") -> str:
        return f"{self.prefix}:provider:{provider}{suffix}"

    def _keys(self, provider: str) -> list:
        return [
            self._key(provider),
            self._key(provider, ":errors"),
            self._key(provider, ":probe"),
            f"{self.prefix}:index",
        ]

    # --- HealthStore -----------------------------------------------------------

    def record_success(self, provider: str, latency_s: Optional[float] = None, *, pipe: Any = None) -> None:
        """Record a success. With `pipe` (a redis-py pipeline) the call is only
        queued there, to save a round trip: hand its reply to `success_recorded`."""
        args = [provider, repr(float(self.clock())), "" if latency_s is None else repr(float(latency_s))]
        if pipe is not None:
            self._success(keys=self._keys(provider), args=args, client=pipe)
            return
        try:
            reply = self._success(keys=self._keys(provider), args=args)
        except redis.RedisError as exc:
            reply = exc
        self.success_recorded(provider, reply)

    def success_recorded(self, provider: str, reply: Any) -> None:
        """Log what recording a success answered (an error is logged, never raised)."""
        if isinstance(reply, Exception):
            logger.warning("health store unavailable; success of %s not recorded: %s", provider, reply)
        elif reply:
            logger.info("circuit for %s closed after a successful call", provider)

    def record_failure(self, provider: str, error: Any) -> None:
        category = error_category(error)
        now = float(self.clock())
        args = [
            provider,
            repr(now),
            category.value,
            error_message(error),
            "1" if counts_toward_circuit(category) else "0",
            str(self.policy.failure_threshold),
            repr(now + self.policy.cooldown_s),
        ]
        try:
            outcome = _text(self._failure(keys=self._keys(provider), args=args))
        except redis.RedisError as exc:
            logger.warning("health store unavailable; failure of %s not recorded: %s", provider, exc)
            return
        if outcome == "opened":
            logger.warning(
                "circuit for %s opened for %.1fs after %s", provider, self.policy.cooldown_s, category.value
            )

    def allow_request(self, provider: str) -> bool:
        return self.queue_allow_request(provider, self.redis).answer()

    def queue_allow_request(self, provider: str, pipe: Any) -> "AllowCheck":
        """`allow_request` as one call queued on `pipe` (a worker sends it in
        the round trip that starts the job); the returned check reads its
        reply. With a plain client the call is made at once."""
        # The token names the claimant, for an operator reading the key.
        token = f"{uuid.uuid4().hex}@{time.time():.3f}"
        timeout_ms = max(1, int(self.policy.probe_timeout_s * 1000))
        keys = [self._key(provider), self._key(provider, ":probe")]
        check = AllowCheck(self, provider, keys[1], token)
        try:
            reply = self._allow(keys=keys, args=[repr(float(self.clock())), token, timeout_ms], client=pipe)
        except redis.RedisError as exc:
            reply = exc
        if not isinstance(pipe, redis.client.Pipeline):
            check.reply = reply
        return check

    def _fetch(self, providers: list) -> Dict[str, HealthSnapshot]:
        pipe = self.redis.pipeline(transaction=True)
        for provider in providers:
            pipe.hgetall(self._key(provider))
            pipe.hgetall(self._key(provider, ":errors"))
            pipe.exists(self._key(provider, ":probe"))
        replies = pipe.execute()
        now = float(self.clock())
        out = {}
        for i, provider in enumerate(providers):
            raw, errors, probing = replies[3 * i : 3 * i + 3]
            record = _record_from_hash(raw, errors)
            out[provider] = derive_snapshot(provider, record, self.policy, now, bool(probing))
        return out

    def snapshot(self, provider: str) -> HealthSnapshot:
        return self._fetch([provider])[provider]

    def all_snapshots(self) -> Dict[str, HealthSnapshot]:
        providers = sorted(_text(p) for p in self.redis.smembers(f"{self.prefix}:index"))
        return self._fetch(providers) if providers else {}

    def reset(self, provider: Optional[str] = None) -> None:
        index = f"{self.prefix}:index"
        names = [provider] if provider is not None else [_text(p) for p in self.redis.smembers(index)]
        pipe = self.redis.pipeline(transaction=True)
        for name in names:
            pipe.delete(*self._keys(name)[:3])
            pipe.srem(index, name)
        pipe.execute()


__all__ = ["RedisHealthStore"]


class AllowCheck:
    """The answer of one `allow_request` call, once its reply is in."""

    def __init__(self, store: "RedisHealthStore", provider: str, probe_key: str, token: str):
        self.store = store
        self.provider = provider
        self.probe_key = probe_key
        self.token = token
        self.reply: Any = None

    def answer(self, reply: Any = None) -> bool:
        if reply is not None:
            self.reply = reply
        if isinstance(self.reply, Exception):
            logger.warning("health store unavailable; letting %s through: %s", self.provider, self.reply)
            return True
        return bool(int(self.reply or 0))

    @property
    def closed(self) -> bool:
        """The circuit let the call through as closed: not a half-open probe, not an outage."""
        return not isinstance(self.reply, Exception) and int(self.reply or 0) == 1

    def release(self) -> None:
        """The call will not be made: give back a half-open probe it claimed."""
        if isinstance(self.reply, Exception) or int(self.reply or 0) != 2:
            return
        try:
            self.store._release(keys=[self.probe_key], args=[self.token])
        except redis.RedisError as exc:
            logger.warning("could not release the %s probe: %s", self.provider, exc)
