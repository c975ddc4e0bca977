"""Concurrency leases a worker process holds, kept alive by its heartbeat.

A configured concurrency cap (tasks.limiter) is a sorted set of leases,
each scored by the moment it expires, so a worker that dies holding one
cannot hold the slot for ever. With one long TTL for every lease, a
SIGKILLed worker's slots stayed taken for that whole TTL (ten minutes, a
cap of one stalled for ten minutes), while a shorter one would take a slot
from a live worker's long call.

So a process that heart-beats (tasks.leases) takes its cap leases with a
short TTL (its `lease_ttl_s`: a dead worker's slots come back when its jobs
do), and every beat pushes the expiry of each lease it still holds for a
running job forward: one Lua call for all of them, whatever their number.
A lease given back (`Limiter.settle`) or already expired is never brought
back (ZADD XX), and a lease whose job left without settling it (a bug, a
crash in between) is no longer refreshed, so it lapses within the short TTL.

If Redis is away for longer than the TTL, a live worker's leases may lapse
and other workers take those slots: the cap is exceeded by the calls that
were in flight, until they end.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Collection, Dict, List, Sequence, Tuple

#: How long a lease's sorted set itself lives after its last grant or refresh:
#: only so that an endpoint nobody calls any more leaves no key behind.
KEY_TTL_S = 600.0

# KEYS[i]: the cap of the i-th lease ; ARGV[1]: ttl_s, ARGV[1 + i]: the i-th lease.
# Each expiry moves to (Redis) now + ttl_s, if the lease is still there.
_REFRESH = """
local t = redis.call('TIME')
local expiry = tonumber(t[1]) + tonumber(t[2]) / 1000000 + tonumber(ARGV[1])
local kept, touched = 0, {}
for i = 1, #KEYS do
  if redis.call('ZADD', KEYS[i], 'XX', 'CH', expiry, ARGV[i + 1]) == 1 then
    kept = kept + 1
    if not touched[KEYS[i]] then
      touched[KEYS[i]] = true
      redis.call('PEXPIRE', KEYS[i], KEY_TTL_MS)
    end
  end
end
return kept
""".replace("KEY_TTL_MS", str(int(KEY_TTL_S * 1000)))


class HeldLeases:
    """This process's cap leases: lease id -> (its job's record key, the caps it counts in)."""

    def __init__(self, client: Any, ttl_s: float):
        self.ttl_s = float(ttl_s)
        self._held: Dict[str, Tuple[str, Tuple[str, ...]]] = {}
        self._lock = threading.Lock()
        self._refresh = client.register_script(_REFRESH)

    def hold(self, lease_id: str, job_key: str, caps: Sequence[str]) -> None:
        if caps:
            with self._lock:
                self._held[lease_id] = (job_key, tuple(caps))

    def release(self, lease_id: str) -> None:
        with self._lock:
            self._held.pop(lease_id, None)

    def held(self) -> List[str]:
        with self._lock:
            return list(self._held)

    def refresh(self, running_job_keys: Callable[[], Collection[str]]) -> int:
        """Push forward every lease held for a running job; forget the rest.

        `running_job_keys` is asked after the leases are listed: a job is
        running before it takes a lease, so a lease listed here is never
        taken for a job missing from the answer. One Redis command, none
        when nothing is held. Returns how many leases were still there.
        """
        with self._lock:
            held = list(self._held.items())
        if not held:
            return 0
        running = running_job_keys()
        keys: List[str] = []
        args: List[Any] = [self.ttl_s]
        for lease_id, (job_key, caps) in held:
            if job_key not in running:
                self.release(lease_id)  # its job left without settling: let it lapse
                continue
            for cap in caps:
                keys.append(cap)
                args.append(lease_id)
        if not keys:
            return 0
        return int(self._refresh(keys=keys, args=args))


__all__ = ["HeldLeases", "KEY_TTL_S"]
