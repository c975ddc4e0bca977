"""The spill shadow: jobs on their way to a target count in its probed wait.

A `spill=True` job that leaves its target for a later one (tasks.capacity)
is in the new target's queue for a while before it takes a turn or a ticket
there. Without a record of it, every job judging at that moment sees the
same short line and moves too: measured, ~450 of 1,200 jobs went to a
300 rpm target beside a 600 rpm one, which then finished last.

So a spill books its place (tasks.limiter `claim_spill`) in the same Lua
call that makes the last estimate, and every probe (`wait_estimate`) counts
the places booked. The shadow is one time per endpoint and lane, the cells'
time after the last place ("TAT", as the budgets keep): a probe reads each
cell as at least that late, so places are spaced at the endpoint's full
known rate and, once the jobs arrive and take their turns, are counted once,
not twice. The key expires when its last place is reached: it drains by
itself, a worker that died mid-spill leaves nothing for good, and nothing
grows. An endpoint never seen, with no rate known yet, takes at most
SLOW_START spills per slow-start lease TTL (a counter that expires).
"""

from __future__ import annotations

from typing import Callable, List

# Spliced into tasks.limiter's _ACQUIRE (which fills SLOW_START_N and SS_TTL_MS). A probe or a
# claim reads the spill shadow, KEYS[4 + nb]: the budget time ("TAT") the
# cells would have if the jobs that chose to spill here, and are still on
# their way (in this target's queue), had taken their turns. A probe counts
# it in every cell, spaced at the endpoint's full known rate even where it is
# not paced yet (a cold endpoint is not slowed down, but must not promise room
# to every job that asks). `probe_answer` then takes the longest wait found:
# a pause or full cap (`est`), the budgets, and, for a newcomer, the lane's
# line (a job back from its ticket holds its place). A claim (ARGV[9 + 3 *
# nb] == '2') books the turn it was promised: the shadow moves to the cells'
# time after it, and expires then. An endpoint never seen, with no rate
# known, takes at most SLOW_START claims per slow-start lease TTL (a counter).
PROBE_LUA = """
local shadow, shadow_next, spill_step = 0, 0, 0
if probe then shadow = tonumber(redis.call('GET', KEYS[4 + nb]) or '0') or 0 end
local function probe_answer(wait, reason, line_step)
  if est > wait then wait = est end
  if redis.call('HGET', KEYS[3], 'wait_reason') ~= 'budget' then
    local line = tonumber(redis.call('GET', KEYS[2]) or '0') or 0
    if line + line_step - now > wait then wait, reason = line + line_step - now, 'line' end
  end
  if ARGV[9 + 3 * nb] ~= '2' or wait > tonumber(ARGV[10 + 3 * nb]) then return {0, tostring(wait), reason} end
  -- Only a claim is capped here: a job already on its way counts in the cap
  -- and must not be told its own target is full.
  local cold = not seen and spill_step == 0
  if cold and (tonumber(redis.call('GET', KEYS[5 + nb]) or '0') or 0) >= SLOW_START_N then
    return {0, tostring(wait), 'slowstart'}
  end
  if cold then
    redis.call('INCR', KEYS[5 + nb])
    redis.call('PEXPIRE', KEYS[5 + nb], SS_TTL_MS)
  elseif shadow_next > now then
    redis.call('SET', KEYS[4 + nb], tostring(shadow_next), 'PX', math.ceil((shadow_next - now) * 1000) + 1000)
  end
  return {3, tostring(wait), 'spill'}
end
"""


def shadow_keys(bucket_key: Callable[[str, str], str], endpoint: str, lane: str) -> List[str]:
    """KEYS[4 + nb] and KEYS[5 + nb] of a probe: the lane's shadow, the endpoint's cold-spill count."""
    return [bucket_key(endpoint, f"spill:{lane}"), bucket_key(endpoint, "spill:cold")]


__all__ = ["PROBE_LUA", "shadow_keys"]
