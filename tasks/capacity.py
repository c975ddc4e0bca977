"""The run task's capacity decisions, kept out of tasks.run: admit, wait, give up.

- `admit`: ask the limiter; a turn reserved within the horizon (or a short
  pause / full concurrency cap) is slept out in the slot, bounded by
  `capacity_horizon_s`; anything longer is the caller's to defer.
- `deadline_passed`: a job waits for capacity until its deadline
  (`rate_limit_deadline_s` on the job, else the setting, 24 h by default),
  counted from when it was created; then it fails with `rate_limited`.
- `should_spill`: an opt-in (`spill=True`) job that would wait, or has
  waited, `spill_after_s` or more on one target moves to the next one (same
  job id, counted as `spilled`, not as a failover).
"""

from __future__ import annotations

import logging
import random
import time
from typing import Any, Dict

from promptq.providers.error_handling import ErrorCategory, ProviderError

from .limiter import Admission, estimate_tokens
from .redis_wait import is_transient

logger = logging.getLogger(__name__)


def lane_of(spec: Dict[str, Any]) -> str:
    """A job's lane: its own, else batch lines go to the batch lane."""
    lane = spec.get("lane")
    if lane in ("interactive", "batch"):
        return lane
    return "batch" if spec.get("batch_id") else "interactive"


class CapacityGate:
    def __init__(self, runtime: Any, spec: Dict[str, Any], provider: str, model: str, job_key: str = ""):
        self.rt = runtime
        self.job_key = job_key
        self.spec = spec
        self.provider = provider
        self.model = model
        self.lane = lane_of(spec)
        self.tokens = estimate_tokens(spec)

    def admit(self) -> Admission:
        """Granted, or not granted with the wait (seconds) the caller should defer for."""
        horizon = self.rt.settings.capacity_horizon_s
        slept, reserved = 0.0, False
        while True:
            try:
                admission = self.rt.limiter.acquire(self.provider, self.model, lane=self.lane, tokens=self.tokens,
                                                    reserved=reserved, job_key=self.job_key)
            except Exception as exc:  # a limiter outage must not stop the queue: fail open
                # Redis away or full: one line, not a traceback (tasks.redis_wait).
                logger.warning("limiter unavailable (%s: %s); calling %s:%s unpaced", type(exc).__name__,
                               str(exc)[:200], self.provider, self.model, exc_info=not is_transient(exc))
                return Admission(granted=True)
            if admission.granted:
                return admission
            short = admission.wait_s + slept <= horizon
            if admission.reserved or (short and admission.reason in ("concurrency", "paused")):
                # Our turn is near (or a slot frees soon): wait here, in the slot.
                pause = admission.wait_s + (random.uniform(0, 0.05) if not admission.reserved else 0.0)
                time.sleep(pause)
                slept += pause
                reserved = reserved or admission.reserved
                continue
            return admission

    def deadline(self) -> float:
        limit = self.spec.get("rate_limit_deadline_s")
        limit = self.rt.settings.rate_limit_deadline_s if limit is None else float(limit)
        created = self.spec.get("created_at") or time.time()
        return float(created) + limit

    def deadline_passed(self, wait_s: float) -> bool:
        return time.time() + wait_s > self.deadline()

    def rate_limited_error(self, why: str) -> ProviderError:
        return ProviderError(
            f"{self.provider}:{self.model} rate_limited: {why}",
            category=ErrorCategory.RATE_LIMIT,
            provider=self.provider,
            retryable=False,
            error_type="rate_limited",
        )

    def should_spill(self, job_key: str, target_index: int, has_next: bool, wait_s: float) -> bool:
        """Spill when the wait ahead, or the wait so far on this target, reaches `spill_after_s`."""
        if not (self.spec.get("spill") and has_next):
            return False
        if wait_s >= self.rt.settings.spill_after_s:
            return True
        since = self.rt.redis.hget(job_key, "waiting_since")
        since = since.decode() if isinstance(since, bytes) else since
        if not since:
            return False
        index, _, when = since.partition(":")
        return int(index) == target_index and time.time() - float(when) >= self.rt.settings.spill_after_s


__all__ = ["CapacityGate", "lane_of"]
