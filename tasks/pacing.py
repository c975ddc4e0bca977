"""Learned limits: what the provider's own answers say, turned into pacing.

After every answer from provider:model (a success or a 429) one Lua call
updates that endpoint's pace hash in Redis, shared by every worker:

- `learned_rpm` / `learned_tpm`: the provider's stated limits
  (`x-ratelimit-limit-*`, `anthropic-ratelimit-*-limit`);
- `paused_until` (Redis time): after a 429, everyone waits until the time
  the provider asked (`Retry-After`, `retry-after-ms`, else its reset
  headers, else 1 s); after a success that left nothing (`remaining` 0),
  everyone waits until one more request is due (the reset, at most 60/limit
  seconds: OpenAI's reset is the time until the *whole* budget is back)
  instead of collecting the 429;
- `factor` (AIMD): halved by a 429, climbs back by `INCREASE` per success;
- `rpm_eff` / `tpm_eff` = learned limit x factor, which tasks.limiter uses as
  a budget while the endpoint is "hot": a 429 in the last minute, or the
  provider reporting less than half of its budget left. A cold endpoint
  with plenty of headroom is not slowed down.
- A provider that states no limit (LiteLLM's proxy, a gateway) is paced by
  its pauses alone: every 429 stops every worker until the time it asked
  (or 1 s). Estimating a rate from the first 429 of a cold burst proved far
  too low (a few requests seen, so a few per minute allowed), so none is.

Counters for `promptq health`: requests, tokens and 429s this minute and
the minute before.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, Optional

from promptq.providers.rate_limit_info import RateLimitInfo, parse_rate_limit_info

from .redis_wait import is_transient

logger = logging.getLogger(__name__)

INCREASE = 0.02
DECREASE = 0.5
MIN_FACTOR = 0.05
#: A 429 keeps an endpoint paced for this long.
HOT_S = 60.0

# KEYS[1] pace hash. ARGV: outcome ('ok'|'429'), limit_req, remaining_req, reset_req,
# limit_tok, remaining_tok, reset_tok, retry_after, tokens, inc, dec, min_factor, hot_s
_OBSERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local h = KEYS[1]
local function num(x) if not x or x == '' then return nil end return tonumber(x) end
-- One read and one write of the hash: this runs on every answer. A field
-- that keeps its text is not written again where that is known from values
-- at hand (this script is the hash's only writer, and Redis stores a Lua
-- number as '%.17g', which reads back as the same number): comparing every
-- field's text instead cost more Lua than the shorter HSET saves.
local f = redis.call('HMGET', h, 'm_start', 'm_req', 'm_tok', 'm_429', 'factor', 'last_429_at', 'paused_until',
                     'learned_rpm', 'learned_tpm', 'n429', 'n_ok', 'rpm_eff', 'tpm_eff', 'seen')
local set = {}
if f[14] ~= '1' then set[1] = 'seen'; set[2] = '1' end
local function put(k, v) set[#set + 1] = k; set[#set + 1] = v end
local ms = num(f[1]) or 0
local m_req, m_tok, m_429 = num(f[2]) or 0, num(f[3]) or 0, num(f[4]) or 0
local rolled = now - ms >= 60
if rolled then
  if now - ms < 120 then put('p_req', m_req); put('p_tok', m_tok); put('p_429', m_429)
  else put('p_req', 0); put('p_tok', 0); put('p_429', 0) end
  m_req, m_tok, m_429 = 0, 0, 0
  put('m_start', tostring(now))
end
local lr, rr, sr = num(ARGV[2]), num(ARGV[3]), num(ARGV[4])
local lt, rt, st = num(ARGV[5]), num(ARGV[6]), num(ARGV[7])
-- OpenAI's reset is the time until the whole budget is back; the next
-- request is possible after one request's (or a second's worth of tokens')
-- share of the minute, so never pause longer than that for "remaining 0".
if sr and lr and lr > 0 then sr = math.min(sr, 60 / lr) end
if st then st = math.min(st, 1) end
local learned_rpm, learned_tpm = num(f[8]), num(f[9])
-- (0 is written anyway: '-0' and '0' read back as equal numbers.)
if lr then if lr ~= learned_rpm or lr == 0 then put('learned_rpm', lr) end; learned_rpm = lr end
if lt then if lt ~= learned_tpm or lt == 0 then put('learned_tpm', lt) end; learned_tpm = lt end
local factor = num(f[5]) or 1
local last429 = num(f[6]) or 0
local paused = num(f[7]) or 0
if ARGV[1] == '429' then
  m_429 = m_429 + 1
  put('n429', (num(f[10]) or 0) + 1)
  -- One decrease per second: a burst of 429s from one moment is one signal.
  if now - last429 >= 1 then factor = math.max(tonumber(ARGV[12]), factor * tonumber(ARGV[11])) end
  last429 = now
  put('last_429_at', tostring(now))
  local wait = num(ARGV[8]) or sr or st or 1
  if paused < now + wait then paused = now + wait end
else
  m_req = m_req + 1
  m_tok = m_tok + math.floor(tonumber(ARGV[9]) or 0)
  put('n_ok', (num(f[11]) or 0) + 1)
  factor = math.min(1, factor + tonumber(ARGV[10]))
  if rr and rr <= 0 and sr and paused < now + sr then paused = now + sr end
  if rt and rt <= 0 and st and paused < now + st then paused = now + st end
end
put('m_req', m_req); put('m_tok', m_tok)
if rolled or m_429 ~= num(f[4]) then put('m_429', m_429) end
local factor_text, paused_text = tostring(factor), tostring(paused)
if factor_text ~= f[5] then put('factor', factor_text) end
if paused_text ~= f[7] then put('paused_until', paused_text) end
local hot = now - last429 < tonumber(ARGV[13])
local hot_req = hot or (lr and rr and rr < 0.5 * lr)
local hot_tok = hot or (lt and rt and rt < 0.5 * lt)
local gone = {}
if learned_rpm and hot_req then put('rpm_eff', tostring(learned_rpm * factor))
elseif f[12] then gone[#gone + 1] = 'rpm_eff' end
if learned_tpm and hot_tok then put('tpm_eff', tostring(learned_tpm * factor))
elseif f[13] then gone[#gone + 1] = 'tpm_eff' end
redis.call('HSET', h, unpack(set))
if #gone > 0 then redis.call('HDEL', h, unpack(gone)) end
-- An endpoint idle for a day is forgotten. Set when a minute window starts
-- (so also when the hash is new): it then lasts 86340 to 86400 s after the
-- last answer, not one EXPIRE per answer.
if rolled then redis.call('EXPIRE', h, 86400) end
return tostring(paused - now)
"""


def _arg(value: Optional[float]) -> str:
    return "" if value is None else repr(float(value))


class Pacer:
    """Feeds each answer's rate-limit headers into the endpoint's shared pace hash."""

    def __init__(self, client: Any, prefix: str):
        self.redis = client
        self.prefix = prefix
        self._observe = client.register_script(_OBSERVE)

    def pace_key(self, endpoint: str) -> str:
        return f"{self.prefix}:pace:{endpoint}"

    def observe(self, endpoint: str, headers: Any, *, rate_limited: bool, retry_after_s: Optional[float] = None,
                tokens: int = 0, pipe: Any = None) -> float:
        """Record one answer; returns how long the endpoint is now paused (<= 0: not paused).

        With `pipe` the call is only queued there (its reply is the pause, as text)."""
        info: RateLimitInfo = parse_rate_limit_info(headers)
        retry = retry_after_s if retry_after_s is not None else info.retry_after_s
        args = ["429" if rate_limited else "ok", _arg(info.limit_requests), _arg(info.remaining_requests),
                _arg(info.reset_requests_s), _arg(info.limit_tokens), _arg(info.remaining_tokens),
                _arg(info.reset_tokens_s), _arg(retry), int(tokens or 0), INCREASE, DECREASE, MIN_FACTOR,
                HOT_S]
        if pipe is not None:
            self._observe(keys=[self.pace_key(endpoint)], args=args, client=pipe)
            return 0.0
        try:
            return float(self._observe(keys=[self.pace_key(endpoint)], args=args))
        except Exception as exc:  # pacing is an optimisation: never fail a job for it
            logger.warning("pacing: could not record an answer from %s (%s: %s)", endpoint, type(exc).__name__,
                           str(exc)[:200], exc_info=not is_transient(exc))
            return 0.0

    def snapshot(self, endpoint: str) -> Dict[str, Any]:
        """The pace hash as numbers, plus Redis's now."""
        raw = self.redis.hgetall(self.pace_key(endpoint))
        data: Dict[str, Any] = {}
        for k, v in raw.items():
            k = k.decode() if isinstance(k, bytes) else k
            v = v.decode() if isinstance(v, bytes) else v
            try:
                data[k] = float(v)
            except ValueError:
                data[k] = v
        seconds, micros = self.redis.time()
        data["now"] = seconds + micros / 1e6
        return data


__all__ = ["Pacer"]
