"""The run task's capacity decisions, kept out of tasks.run: admit, wait, give up.

- `admit`: ask the limiter; a turn reserved within the horizon (or a short
  pause / full concurrency cap) is slept out in the slot, bounded by
  `capacity_horizon_s`; anything longer is the caller's to defer.
- `deadline_passed`: a job waits for capacity until its deadline
  (`rate_limit_deadline_s` on the job, else the setting, 24 h by default),
  counted from when it was created; then it fails with `rate_limited`.
- `spill_target`: an opt-in (`spill=True`) job that would wait, or has
  waited, `spill_after_s` or more on one target moves to the later target
  that can start it soonest, if that is sooner by a margin (same job id,
  counted as `spilled`, not as a failover). Asked before a ticket is booked,
  so a job that leaves does not lengthen the line it leaves; and the move
  books its place at the new target in the same step as the last look
  (tasks.limiter `claim_spill`), so the jobs on their way there count in
  its wait before they reach its line.
"""

from __future__ import annotations

import logging
import random
import time
from typing import Any, Callable, Dict, List, Optional

from promptq.providers.error_handling import ErrorCategory, ProviderError

from .limiter import Admission, estimate_tokens
from .redis_wait import is_transient

logger = logging.getLogger(__name__)

#: A spill must start the job sooner by this share of the wait here, and by
#: at least SPILL_MARGIN_S: a near tie stays put, so jobs do not flap between
#: targets whose lines are equally long. Small: the later target's line ends
#: about this share earlier than this one's, idle meanwhile (10% left a 600 +
#: 300 rpm bench's second target idle for the last ~7 s of 80, once spills
#: were counted on their way and flapping no longer needed a wide margin).
SPILL_MARGIN = 0.02
SPILL_MARGIN_S = 1.0


def _margin(wait_s: float) -> float:
    """How much sooner elsewhere a job must start to move (SPILL_MARGIN)."""
    return max(SPILL_MARGIN_S, SPILL_MARGIN * wait_s)


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
        #: The wait here that `spill_target` probed before a ticket was booked (None: not probed).
        self.probed_here: Optional[float] = None

    def admit_in(self, pipe: Any) -> Callable[[Any], Admission]:
        """The first `acquire` of `admit`, queued on `pipe`; hand its reply to `admit(first=...)`."""
        return self.rt.limiter.acquire_in(pipe, self.provider, self.model, lane=self.lane, tokens=self.tokens,
                                          job_key=self.job_key)

    def admit(self, first: Optional[Callable[[], Admission]] = None) -> Admission:
        """Granted, or not granted with the wait (seconds) the caller should defer for.

        `first`: the first answer, already asked in another round trip (`admit_in`)."""
        horizon = self.rt.settings.capacity_horizon_s
        slept, reserved = 0.0, False
        while True:
            try:
                if first is not None:
                    ask, first = first, None
                    admission = ask()
                else:
                    admission = self.rt.limiter.acquire(self.provider, self.model, lane=self.lane,
                                                        tokens=self.tokens, reserved=reserved, job_key=self.job_key)
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

    def may_spill(self, targets: List[str], target_index: int) -> bool:
        """An opt-in (`spill=True`) job with a later target to move to."""
        return bool(self.spec.get("spill")) and target_index + 1 < len(targets)

    def spill_target(self, targets: List[str], target_index: int, wait_s: Optional[float] = None,
                     ticket: bool = False) -> Optional[int]:
        """The later target an opt-in (`spill=True`) job should move to now, or None to stay.

        Only when the wait here (`wait_s`, else probed) or the wait so far
        on this target reaches `spill_after_s`, and only to a later target
        whose probed wait is shorter by `SPILL_MARGIN`: so each job goes
        where it starts soonest, and a batch spreads over its targets in
        proportion to their rates instead of piling onto the next one.
        Probing books nothing (tasks.limiter `wait_estimate`); the target
        chosen is claimed (`claim_spill`): if jobs judging at the same moment
        took the room first, the job stays.

        `ticket`: `wait_s` is a ticket just booked on this target's line. It
        is judged again only if it came out later than the probe before it
        promised (jobs booking at the same moment): else the job chose to
        stay on a true view, and leaving now would leave a hole in this
        line, a turn nobody takes, and make its wait look longer than it is
        (measured in the spill bench: ~100 such holes a run; without them
        its split went from ~780:420 to ~795:405, ideal 800:400).
        """
        if not self.may_spill(targets, target_index):
            return None
        if ticket and self.probed_here is not None and wait_s is not None \
                and wait_s <= self.probed_here + _margin(self.probed_here):
            return None
        after = self.rt.settings.spill_after_s
        try:
            if wait_s is None:
                here = self.probed_here = self._probe(self.provider, self.model, self.job_key)
            else:
                here = wait_s
            if here < after and not self._waited_long(target_index, after):
                return None
            best, best_wait = None, None
            for index in range(target_index + 1, len(targets)):
                provider, _, model = targets[index].partition(":")
                wait = self._probe(provider, model)
                if best_wait is None or wait < best_wait:
                    best, best_wait = index, wait
            within = here - _margin(here)
            if best is None or best_wait > within:
                return None
            provider, _, model = targets[best].partition(":")
            claimed = self.rt.limiter.claim_spill(provider, model, lane=self.lane, tokens=self.tokens,
                                                  within_s=within)
        except Exception as exc:  # limiter away: stay (admission fails open on its own)
            logger.warning("spill check unavailable (%s: %s)", type(exc).__name__, str(exc)[:200],
                           exc_info=not is_transient(exc))
            return None
        return best if claimed else None

    def _probe(self, provider: str, model: str, job_key: str = "") -> float:
        # `job_key` only here: elsewhere the job would be a newcomer, at the line's end.
        return self.rt.limiter.wait_estimate(provider, model, lane=self.lane, tokens=self.tokens, job_key=job_key)

    def _waited_long(self, target_index: int, after: float) -> bool:
        since = self.rt.redis.hget(self.job_key, "waiting_since") if self.job_key else None
        since = since.decode() if isinstance(since, bytes) else since
        if not since:
            return False
        index, _, when = since.partition(":")
        return int(index) == target_index and time.time() - float(when) >= after

__all__ = ["CapacityGate", "lane_of"]
