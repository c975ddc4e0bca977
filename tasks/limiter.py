"""Shared budgets in Redis: may this call go to provider:model now, or when?

Every worker on every machine draws from the same budgets, one Lua call per
admission, timed by Redis's own `TIME` (never a worker's clock). Each
budget is a GCRA cell (a token bucket kept as one "theoretical arrival
time"): a call of cost c on a budget of R per minute moves the cell's time
on by c*60/R seconds; the call may go when that time is at most `burst_s`
ahead of now. Budgets that apply to a call, all checked and consumed at once
(all or nothing):

- configured per provider and per provider+model (tasks.limits): requests
  per minute, tokens per minute (cost = estimated input + max output
  tokens, corrected by `settle` with the usage the provider reported), and
  concurrency (a sorted set of leases that expire if a worker dies: soon
  where the worker's heartbeat keeps its leases alive, tasks.held_leases);
- learned per provider+model (tasks.pacing writes `rpm_eff` / `tpm_eff` into
  the endpoint's pace hash, and `paused_until` after a 429);
- slow start: until an endpoint's first answer tells us its limits, at most
  `SLOW_START` calls are in flight, so a cold start does not fire hundreds
  of requests into an unknown limit.

Answers: go now; go after a short wait with the turn already reserved (at
most `horizon_s` ahead: the worker sleeps it out in its slot); or wait
elsewhere (the job is deferred, tasks.deferral) until a ticket time. Tickets
are handed out along a per-lane line at the budget's rate, so a large
backlog comes back spread out, not as a herd.

Lanes: the batch lane may fill only (1 - interactive_reserve) of each
budget's burst and horizon, so interactive work always finds room.

Why not the `limits` library: its Redis moving window answers "is there
room" for one limit with the client's clock, and cannot check and consume
several budgets (provider rpm + model rpm + tpm + concurrency) in one atomic
step, reserve a turn, nor say how long to wait; a partial consume across two
calls would leak budget under contention.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from .held_leases import KEY_TTL_S, HeldLeases
from .limits import Limit, scope_key, scopes_for
from .redis_wait import is_transient
from .spill_shadow import PROBE_LUA, shadow_keys

logger = logging.getLogger(__name__)

#: Calls in flight to an endpoint whose limits no answer has told us yet.
SLOW_START = 8
#: How long a concurrency lease lives if its worker dies holding it, where no
#: heartbeat keeps leases alive (a worker's own are kept alive and short-lived:
#: tasks.held_leases).
LEASE_TTL_S = 600.0
#: The same for a slow-start lease. Slow start only softens a cold burst, so a
#: lease may expire under a long call (one more call goes) -- but a worker that
#: dies before the endpoint's first answer must not stall it for LEASE_TTL_S
#: (seen: a SIGKILL during the first calls held all eight slots for 10 min).
SLOW_START_LEASE_TTL_S = 20.0
#: Wait before asking again when a concurrency cap is full.
CONCURRENCY_RETRY_S = 0.2

LANES = ("interactive", "batch")

# KEYS[1] pace hash, KEYS[2] line key, KEYS[3] the job's record, KEYS[3+i] bucket i.
# ARGV: frac, burst_s, horizon_s, lease_id, lease_ttl_s, reserved, nb, then per
# bucket (kind, rate or cap, cost). Kinds: g = GCRA at a configured rate,
# lr/lt = GCRA at the learned rpm_eff/tpm_eff, c = concurrency cap,
# ss = slow-start concurrency (only until the endpoint was first seen).
# ARGV[9 + 3 * nb] = '1': a probe, which only reads: the wait a call would be
# told now (0 if it would go), nothing booked. '2': a spill claim (tasks.spill_shadow):
# the same estimate, and if it is at most ARGV[10 + 3 * nb] seconds, a place is
# booked for the spilled job in KEYS[4 + nb] (the spill shadow) or, before the
# endpoint was first seen, counted in KEYS[5 + nb]; then the code is 3.
# Returns {code, wait_s, reason}: 1 go, 2 reserved (sleep wait_s then go), 0 ticket;
# a go adds 1 if it took a slow-start lease (else `settle` has none to give back).
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local frac, burst, horizon = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local reserved = ARGV[6] == '1'
local nb = tonumber(ARGV[7])
local probe = ARGV[9 + 3 * nb] ~= '0'
-- One read of the pace hash (tasks.pacing): this runs for every call.
local pace = redis.call('HMGET', KEYS[1], 'paused_until', 'seen', 'rpm_eff', 'learned_rpm', 'tpm_eff', 'learned_tpm')
local paused = tonumber(pace[1] or '0') or 0
local seen = pace[2] ~= false
-- A probe does not stop at the first wait it finds: it wants the longest
-- (a short pause must not hide a long line).
local est = 0
if paused > now then
  if not probe then return {0, tostring(paused - now), 'paused'} end
  est = paused - now
end
local conc = {}
local slow_started = 0
for i = 1, nb do
  local kind, key = ARGV[5 + 3 * i], KEYS[3 + i]
  if kind == 'c' or (kind == 'ss' and not seen) then
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
    local cap = tonumber(ARGV[6 + 3 * i])
    if kind == 'c' then cap = math.max(1, math.floor(cap * frac)) end
    if redis.call('ZCARD', key) >= cap then
      if not probe then return {0, ARGV[8 + 3 * nb], 'concurrency'} end
      est = math.max(est, tonumber(ARGV[8 + 3 * nb]))
    end
    local ttl = tonumber(ARGV[5])
    if kind == 'ss' then ttl = SS_TTL; slow_started = 1 end
    table.insert(conc, {key, ttl})
  end
end
SPILL_PROBE
if not reserved then
  local news, worst, worst_step = {}, -1e18, 0
  for i = 1, nb do
    local kind = ARGV[5 + 3 * i]
    local rate, full = nil, nil
    if kind == 'g' then rate = tonumber(ARGV[6 + 3 * i]); full = rate
    elseif kind == 'lr' then
      rate = tonumber(pace[3] or '')
      full = tonumber(pace[4] or '') or rate
    elseif kind == 'lt' then
      rate = tonumber(pace[5] or '')
      full = tonumber(pace[6] or '') or rate
    end
    if probe and not (rate and rate > 0) and full then rate = full end
    if probe and rate and rate > 0 then spill_step = math.max(spill_step, tonumber(ARGV[7 + 3 * i]) * 60 / rate) end
    if rate and rate > 0 then
      local step = tonumber(ARGV[7 + 3 * i]) * 60 / rate
      -- Tickets are spaced at the budget's full rate: a rate backed off for
      -- a while (AIMD) must not stretch the whole line for good.
      local full_step = tonumber(ARGV[7 + 3 * i]) * 60 / math.max(rate, full or rate)
      local tat = tonumber(redis.call('GET', KEYS[3 + i]) or '0') or 0
      if tat < shadow then tat = shadow end
      if tat < now then tat = now end
      local new = tat + step
      news[i] = new
      -- A spill's place is one turn at the full rate, as tickets are: the
      -- rate backed off after a 429 climbs back long before its turn.
      if tat + full_step > shadow_next then shadow_next = tat + full_step end
      local w = new - now - math.max(burst * frac, step)
      if w > worst then worst, worst_step = w, full_step end
    end
  end
  if worst > horizon * frac then
    local start = now + worst - horizon * frac
    if not probe and redis.call('HGET', KEYS[3], 'wait_reason') == 'budget' then
      -- Back from a ticket and beaten to the turn by a moment: come back as
      -- soon as a turn opens, not at the end of the line again.
      return {0, tostring(start - now + worst_step), 'budget'}
    end
    -- No turn within the horizon: take a ticket on this lane's line.
    local line = tonumber(redis.call('GET', KEYS[2]) or '0') or 0
    if line < start then line = start end
    line = line + worst_step
    if probe then return probe_answer(line - now, 'budget', 0) end
    redis.call('SET', KEYS[2], tostring(line), 'PX', math.ceil((line - now) * 1000) + 1000)
    return {0, tostring(line - now), 'budget'}
  end
  if probe then return probe_answer(math.max(worst, 0), 'probe', worst_step) end
  for i, new in pairs(news) do
    redis.call('SET', KEYS[3 + i], tostring(new), 'PX', math.ceil((new - now) * 1000) + 1000)
  end
  if worst > 0 then return {2, tostring(worst), 'reserved'} end
end
for _, lease in ipairs(conc) do
  redis.call('ZADD', lease[1], now + lease[2], ARGV[4])
  redis.call('PEXPIRE', lease[1], KEY_TTL_MS)
end
return {1, '0', 'ok', slow_started}
""".replace("SPILL_PROBE", PROBE_LUA.replace("SLOW_START_N", str(SLOW_START)).replace(
    "SS_TTL_MS", str(int(SLOW_START_LEASE_TTL_S * 1000)))).replace("SS_TTL", repr(SLOW_START_LEASE_TTL_S)).replace(
    "KEY_TTL_MS", str(int(KEY_TTL_S * 1000)))

# Give back concurrency leases and correct token cells by what the call really cost.
# KEYS[1] pace hash, KEYS[1+i] bucket i. ARGV: lease_id, token_delta, nb, then per bucket (kind, rate).
# Runs after every call: a cell is read only if there is a rate to correct it
# by, and Redis's clock only if there is a cell.
_SETTLE = """
local now
local delta, nb = tonumber(ARGV[2]), tonumber(ARGV[3])
for i = 1, nb do
  local kind, key = ARGV[2 + 2 * i], KEYS[1 + i]
  if kind == 'c' or kind == 'ss' then
    redis.call('ZREM', key, ARGV[1])
  elseif delta ~= 0 and (kind == 'gt' or kind == 'lt') then
    local rate = tonumber(ARGV[3 + 2 * i])
    if kind == 'lt' then rate = tonumber(redis.call('HGET', KEYS[1], 'tpm_eff') or '') end
    local tat = rate and rate > 0 and tonumber(redis.call('GET', key) or '')
    if tat then
      if not now then
        local t = redis.call('TIME')
        now = tonumber(t[1]) + tonumber(t[2]) / 1000000
      end
      local new = tat + delta * 60 / rate
      if new > now then
        redis.call('SET', key, tostring(new), 'PX', math.ceil((new - now) * 1000) + 1000)
      else
        redis.call('DEL', key)
      end
    end
  end
end
return 1
"""


@dataclass
class Admission:
    """The limiter's answer. `granted`: call now. Else wait `wait_s` (reserved: in the slot)."""

    granted: bool
    wait_s: float = 0.0
    reason: str = "ok"
    reserved: bool = False
    lease_id: str = ""
    tokens: int = 0
    buckets: List[Tuple[str, str, float]] = field(default_factory=list)


def estimate_tokens(spec: Mapping[str, Any]) -> int:
    """Tokens a call may cost, before it is made: ~4 chars a token in, plus the output cap."""
    chars = len(spec.get("prompt") or "") + len(spec.get("system_prompt") or "")
    for message in spec.get("messages") or []:
        content = message.get("content") if isinstance(message, Mapping) else None
        chars += len(content) if isinstance(content, str) else len(str(content or ""))
    params = spec.get("parameters") or {}
    out = 0
    for name in ("max_tokens", "max_completion_tokens", "max_output_tokens", "num_predict"):
        value = params.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            out = value
            break
    return max(1, chars // 4) + out


class Limiter:
    """Admissions against every budget that applies to provider:model."""

    def __init__(self, client: Any, prefix: str, limits: Mapping[str, Limit], *, interactive_reserve: float = 0.2,
                 burst_s: float = 1.0, horizon_s: float = 2.0):
        self.redis = client
        self.prefix = prefix
        self.limits = dict(limits)
        self.interactive_reserve = interactive_reserve
        self.burst_s = burst_s
        self.horizon_s = horizon_s
        self._acquire = client.register_script(_ACQUIRE)
        self._settle = client.register_script(_SETTLE)
        #: Set by `keep_leases_alive` in a process whose heartbeat refreshes them.
        self.held: Optional[HeldLeases] = None

    def keep_leases_alive(self, ttl_s: float) -> HeldLeases:
        """From now on, cap leases taken for a job live `ttl_s` unless `held.refresh` pushes them on.

        Only for a process whose heartbeat calls `held.refresh` well within
        `ttl_s` (tasks.leases): else a long call would lose its slot."""
        self.held = HeldLeases(self.redis, ttl_s)
        return self.held

    # --- keys ---------------------------------------------------------------

    def pace_key(self, endpoint: str) -> str:
        return f"{self.prefix}:pace:{endpoint}"

    def bucket_key(self, scope: str, kind: str) -> str:
        return f"{self.prefix}:cap:{scope}:{kind}"

    def _buckets(self, provider: str, model: str, tokens: int) -> List[Tuple[str, str, float, float]]:
        """[(key, kind, rate or cap, cost)] for a call."""
        out = []
        for scope, limit in scopes_for(self.limits, provider, model):
            if limit.rpm:
                out.append((self.bucket_key(scope, "req"), "g", limit.rpm, 1))
            if limit.tpm:
                out.append((self.bucket_key(scope, "tok"), "g", limit.tpm, tokens))
            if limit.concurrency:
                out.append((self.bucket_key(scope, "conc"), "c", limit.concurrency, 0))
        endpoint = scope_key(provider, model)
        out.append((self.bucket_key(endpoint, "lreq"), "lr", 0, 1))
        out.append((self.bucket_key(endpoint, "ltok"), "lt", 0, tokens))
        out.append((self.bucket_key(endpoint, "slowstart"), "ss", SLOW_START, 0))
        return out

    # --- admission -------------------------------------------------------------

    def wait_estimate(self, provider: str, model: str, *, lane: str = "interactive", tokens: int = 1,
                      job_key: str = "") -> float:
        """Seconds until a call to provider:model could start, as far as Redis knows now; books nothing.

        The same Lua as `acquire`, read only: so a spill compares like with
        like. The longest of every wait that applies: a pause, the budgets,
        the lane's line (unless `job_key`'s job is back from its ticket there,
        holding its place) and jobs already spilling here (`claim_spill`)."""
        return self._ask(provider, model, lane, tokens, False, job_key, "1").wait_s

    def claim_spill(self, provider: str, model: str, *, lane: str = "interactive", tokens: int = 1,
                    within_s: float) -> bool:
        """Book a place for a job moving to provider:model if `wait_estimate` there is at most `within_s`.

        Asked and booked in one step, so jobs judging at once do not all see
        the same empty line. The place is a time in a key that expires when
        it is reached: a job that dies on its way leaves nothing for longer.
        An endpoint never seen, with no rate known, takes SLOW_START at most."""
        return self._ask(provider, model, lane, tokens, False, "", "2", within_s).reason == "spill"

    def acquire(self, provider: str, model: str, *, lane: str = "interactive", tokens: int = 1,
                reserved: bool = False, job_key: str = "") -> Admission:
        """Ask once. `reserved=True` after sleeping out a reservation: only pauses and concurrency count.

        `job_key`: the job's record; a job back from a ticket (its `wait_reason`
        is "budget") that narrowly misses a turn is not sent to the end of the line."""
        return self._ask(provider, model, lane, tokens, reserved, job_key, "0")

    def _ask(self, provider: str, model: str, lane: str, tokens: int, reserved: bool, job_key: str, mode: str,
             within_s: float = 0.0) -> Admission:
        keys, args, answer = self._acquire_call(provider, model, lane, tokens, reserved, job_key, mode, within_s)
        return answer(self._acquire(keys=keys, args=args))

    def acquire_in(self, pipe: Any, provider: str, model: str, *, lane: str = "interactive",
                   tokens: int = 1, job_key: str = "") -> Callable[[Any], Admission]:
        """`acquire`, queued on `pipe`: returns what turns the pipeline's reply into the Admission.

        So a job's start and its first admission share one round trip (tasks.run)."""
        keys, args, answer = self._acquire_call(provider, model, lane, tokens, False, job_key, "0")
        self._acquire(keys=keys, args=args, client=pipe)
        return answer

    def _acquire_call(self, provider: str, model: str, lane: str, tokens: int, reserved: bool, job_key: str,
                      mode: str, within_s: float = 0.0) -> Tuple[List[str], List[Any], Callable[[Any], Admission]]:
        """KEYS, ARGV and the reply's reader for _ACQUIRE. `mode`: "0" acquire, "1" probe, "2" spill claim."""
        probe = mode != "0"
        if lane not in LANES:
            raise ValueError(f"lane must be one of {', '.join(LANES)}, not {lane!r}")
        frac = 1.0 if lane == "interactive" else 1.0 - self.interactive_reserve
        endpoint = scope_key(provider, model)
        buckets = self._buckets(provider, model, tokens)
        lease_id = uuid.uuid4().hex
        held = self.held if job_key and not probe else None
        keys = [self.pace_key(endpoint), self.bucket_key(endpoint, f"line:{lane}"),
                job_key or self.bucket_key(endpoint, "nojob")] + [b[0] for b in buckets]
        args: List[Any] = [frac, self.burst_s, self.horizon_s, lease_id, held.ttl_s if held else LEASE_TTL_S,
                           "1" if reserved else "0", len(buckets)]
        for _, kind, rate, cost in buckets:
            args += [kind, rate, cost]
        args += [CONCURRENCY_RETRY_S, mode]
        if probe:  # only a probe reads (a claim writes) where spilling jobs are on their way
            keys += shadow_keys(self.bucket_key, endpoint, lane)
            args.append(within_s)
        kept = [(key, "gt" if kind == "g" and key.endswith(":tok") else kind, rate)
                for key, kind, rate, cost in buckets]

        def answer(reply: Any) -> Admission:
            if isinstance(reply, Exception):
                raise reply
            code, wait, reason = reply[:3]
            code = int(code)
            if code == 1 and held is not None:
                held.hold(lease_id, job_key, [key for key, kind, _, _ in buckets if kind == "c"])
            reason = reason.decode() if isinstance(reason, bytes) else str(reason)
            # No slow-start lease taken (the endpoint has answered before): none to give back.
            slow_started = len(reply) > 3 and int(reply[3]) == 1
            return Admission(granted=code == 1, wait_s=max(0.0, float(wait)), reason=reason, reserved=code == 2,
                             lease_id=lease_id if code == 1 else "", tokens=tokens,
                             buckets=kept if slow_started else [b for b in kept if b[1] != "ss"])

        return keys, args, answer

    def settle(self, admission: Admission, actual_tokens: Optional[int] = None, endpoint: str = "",
               pipe: Any = None) -> None:
        """After a granted call: give back concurrency, correct token budgets by the real usage.

        With `pipe` the call is only queued there."""
        if not admission.granted:
            return
        if self.held is not None:
            # Not refreshed any more: even if the ZREM below never lands, the
            # lease lapses within the short TTL.
            self.held.release(admission.lease_id)
        delta = 0 if actual_tokens is None else int(actual_tokens) - admission.tokens
        keys = [self.pace_key(endpoint)] + [b[0] for b in admission.buckets]
        args: List[Any] = [admission.lease_id, delta, len(admission.buckets)]
        for _, kind, rate in admission.buckets:
            args += [kind, rate]
        if pipe is not None:
            self._settle(keys=keys, args=args, client=pipe)
            return
        try:
            self._settle(keys=keys, args=args)
        except Exception as exc:  # a lease left behind expires on its own
            logger.warning("limiter: could not settle %s (%s: %s)", endpoint, type(exc).__name__, str(exc)[:200],
                           exc_info=not is_transient(exc))

    def snapshot(self, provider: str, model: str) -> Dict[str, Any]:
        """How full each budget of an endpoint is now, for `health` and metrics."""
        endpoint = scope_key(provider, model)
        now = self._now()
        out: Dict[str, Any] = {}
        for key, kind, rate, _ in self._buckets(provider, model, 1):
            if kind in ("c", "ss"):
                out[key.rsplit(":", 1)[-1] if kind == "ss" else key] = self.redis.zcount(key, now, "+inf")
            else:
                tat = self.redis.get(key)
                out[key] = round(max(0.0, float(tat) - now), 3) if tat else 0.0
        out["endpoint"] = endpoint
        return out

    def _now(self) -> float:
        seconds, micros = self.redis.time()
        return seconds + micros / 1e6


__all__ = ["Admission", "LANES", "Limiter", "estimate_tokens"]
