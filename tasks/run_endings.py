"""How one delivery of a job ends: its result written, a retry, a wait for
capacity, a move to the next target, a failure or a cancellation.

`JobEndings` is the second half of tasks.run's `JobRun` (which starts the
delivery and makes the call); it reads the attributes `JobRun.__init__`
sets: rt, task, job_id, spec, targets, target_index, attempt, token,
batch_id, stream, streamed_any, provider_name, model, endpoint.
"""

from __future__ import annotations

import logging
import random
import time
from typing import Any, Dict, List, Optional

from celery.exceptions import Ignore

from promptq.providers.backoff import retry_delay_s
from promptq.providers.base import ProviderResult
from promptq.providers.error_handling import ErrorCategory, ProviderError

from . import reliable_fetch, test_hooks
from .capacity import CapacityGate
from .keys import TASK_NAME
from .lanes import route
from .pricing import NANO
from .redis_wait import is_transient, wait_for_redis
from .store import JobStatus, new_token

logger = logging.getLogger(__name__)

#: A batch job cancelled at its start because the batch spent its `max_cost_usd`.
SPEND_LIMIT_MESSAGE = "not run: the batch reached its spend limit (max_cost_usd)"


class JobFailed(Exception):
    """Raised so Celery and Flower show the job's final failure as a failure."""


class JobEndings:
    """The outcomes of a delivery, and the records and events they write."""

    rt: Any

    def _succeed(self, result: ProviderResult, elapsed_s: float, admission: Any = None) -> Dict[str, Any]:
        usage = result.usage.to_dict()
        self.rt.observer.request_finished(self.provider_name, ok=True, latency_s=elapsed_s, usage=usage)
        payload = result.to_dict()
        payload["target"] = f"{self.provider_name}:{self.model}"
        # Priced by the model asked for: the one a config's prices name.
        cost_nano = self.rt.pricing.cost_nano(self.provider_name, self.model, usage)
        cost = None if cost_nano is None else cost_nano / NANO
        payload["cost_usd"] = cost
        if cost:
            self.rt.observer.priced(payload["target"], cost)
        attempt_record = self._attempt_record(elapsed_s, outcome="succeeded")
        test_hooks.pause("before_record", self.job_id)
        skip = 2 if admission is not None else 1  # settle/pacing replies: they never fail a success
        tag = self._delivery_tag()
        acked = False

        def write() -> List[Any]:
            nonlocal acked
            # One round trip: health, attempt, record and `done` event, in that order.
            pipe = self.rt.redis.pipeline(transaction=False)
            self.rt.health.record_success(self.endpoint, result.latency_s or elapsed_s, pipe=pipe)
            # Budgets settled with the real usage, and the headers taught to
            # pacing, in the same round trip.
            if admission is not None:
                self.rt.limiter.settle(admission, usage.get("total_tokens"), self.endpoint, pipe=pipe)
            self.rt.pacer.observe(self.endpoint, result.rate_limit_headers, rate_limited=False,
                                  tokens=usage.get("total_tokens") or 0, pipe=pipe)
            self.rt.store.add_attempt(self.job_id, attempt_record, pipe=pipe)
            self.rt.store.finish(self.job_id, status=JobStatus.SUCCEEDED, payload=payload, batch_id=self.batch_id,
                                 usage=usage, cost_nano=cost_nano or 0, pipe=pipe, event_follows=True)
            self._emit(
                "done", store=self.stream, pipe=pipe, usage=usage, provider=result.provider,
                model=result.model, finish_reason=result.finish_reason, cost_usd=cost,
            )
            # The message's ack rides along: a finished job's message has nothing left to guard.
            acked = reliable_fetch.ack_in(pipe, self.rt.keys.prefix, tag)
            replies = self.rt.round_trips.execute(pipe)
            for reply in replies[1 + skip:]:
                if isinstance(reply, Exception) and is_transient(reply):
                    raise reply  # e.g. OOM: try the whole write again once memory frees up
            return replies

        # The answer is paid for: if Redis is away, wait to record it rather
        # than fail the task and have the job called again.
        health, *replies = wait_for_redis(write, f"job {self.job_id}: record result")
        if acked:
            reliable_fetch.acked_in_write(tag)
        self.rt.health.success_recorded(self.endpoint, health)  # logged, never raised
        for reply in replies[skip:]:
            if isinstance(reply, Exception):
                raise reply
        self.rt.observer.job_finished("succeeded")
        return {"outcome": "succeeded", "provider": result.provider, "model": result.model}

    def _handle_error(self, error: ProviderError, elapsed_s: float) -> Dict[str, Any]:
        circuit_open = error.error_type == "circuit_open"
        # A 429 says "wait", not "broken": it pauses every worker on this
        # endpoint (tasks.pacing) and the job waits without spending a retry.
        rate_limited = error.category is ErrorCategory.RATE_LIMIT and not circuit_open
        # A worker without the provider's key must not open the circuit that
        # every other, correctly configured, worker shares.
        if error.error_type not in ("circuit_open", "missing_key"):
            self.rt.health.record_failure(self.endpoint, error)
            self.rt.observer.request_finished(
                self.provider_name, ok=False, latency_s=elapsed_s, category=error.category.value
            )
        pause_s = 0.0
        if rate_limited:
            pause_s = self.rt.pacer.observe(self.endpoint, error.rate_limit_headers, rate_limited=True,
                                            retry_after_s=error.retry_after)
        self.rt.store.add_attempt(self.job_id, self._attempt_record(elapsed_s, outcome="error", error=error.to_dict()))
        if self.streamed_any:
            self._emit("reset", store=True, reason=str(error))
        logger.warning("job %s: %s attempt %d failed: %s", self.job_id, self.targets[self.target_index], self.attempt, error)

        if rate_limited:
            wait_s = max(pause_s, error.retry_after or 0.0, 0.05)
            return self._wait(wait_s, reason="rate_limited", error=error, next_attempt=self.attempt + 1)
        has_next = self.target_index + 1 < len(self.targets)
        limit = self.spec.get("max_retries")
        limit = self.rt.settings.max_retries if limit is None else limit
        # max_retries counts real failures: attempts that ended in a 429 are not.
        waits = self.rt.redis.hget(self.rt.keys.job(self.job_id), f"rl_waits:{self.target_index}")
        failures = self.attempt - int(waits or 0)
        # An open circuit on the last target is worth waiting out; elsewhere
        # the next target answers sooner.
        wants_retry = (error.retryable and failures <= limit) or (circuit_open and not has_next and failures <= limit)
        if wants_retry:
            return self._retry(error, failures)
        if has_next:
            return self._failover(error)
        return self._fail(error)

    def _retry(self, error: ProviderError, failures: int) -> Dict[str, Any]:
        # Waits in Redis (tasks.deferral), not as a Celery ETA message in a worker;
        # the backoff grows with real failures, not with 429s waited out.
        delay_s = retry_delay_s(error, failures, cap_s=self.rt.settings.retry_cap_s)
        since = self.rt.deferrer.defer(
            self.job_id, self.token, due=time.time() + delay_s, status=JobStatus.RETRYING.value,
            target_index=self.target_index, attempt=self.attempt + 1, batch_id=self.batch_id, counter="retried",
            reason=error.category.value, endpoint=self.endpoint,
        )
        if since is None:
            raise Ignore()  # another delivery owns the job now
        self._emit("retry", store=self.stream, error=error.to_dict(), delay_s=round(delay_s, 3))
        self.rt.observer.retried(self.provider_name, delay_s)
        return {"outcome": "retry", "delay_s": delay_s}

    def _wait(self, wait_s: float, *, reason: str, error: Optional[ProviderError] = None,
              next_attempt: Optional[int] = None) -> Dict[str, Any]:
        """Wait for capacity in Redis: no retry spent, until the job's deadline."""
        has_next = self.target_index + 1 < len(self.targets)
        if wait_s > self.rt.settings.retry_cap_s:
            # Far out: come back at the cap and ask again (then at the line's end)
            # rather than judge the deadline by a guess that far ahead.
            wait_s, reason = self.rt.settings.retry_cap_s, f"{reason}_capped"
        if self.gate_for().deadline_passed(wait_s):
            why = self.gate_for().rate_limited_error("still no capacity at the job's rate_limit_deadline_s")
            return self._failover(why) if has_next else self._fail(why, reason="rate_limited")
        # Judged again here, tickets ("budget") included: the probe in _run can
        # be stale when jobs arrive together (all saw an empty line, then all
        # but one got a ticket a minute out), and such a job must still leave;
        # a ticket as the probe promised stays (tasks.capacity: no hole).
        spill_to = self.gate_for().spill_target(self.targets, self.target_index, wait_s,
                                                ticket=reason == "budget")
        if spill_to is not None:
            why = error or self.gate_for().rate_limited_error(f"no capacity ({reason})")
            return self._failover(why, spill=True, to_index=spill_to)
        # Tickets ("budget") are spread already; jobs told one time by a pause or
        # a 429 get a little jitter, so they do not return as a herd.
        jitter = 0.0 if reason == "budget" else random.uniform(0.0, min(0.25, wait_s * 0.1))
        due = time.time() + wait_s + jitter
        since = self.rt.deferrer.defer(
            self.job_id, self.token, due=due, status=JobStatus.WAITING.value, target_index=self.target_index,
            attempt=next_attempt or self.attempt, batch_id=self.batch_id, rate_limited=error is not None,
            counter="rate_limited" if error is not None else "",
            reason=reason, endpoint=self.endpoint,
        )
        if since is None:
            raise Ignore()
        if error is not None:
            self._emit("retry", store=self.stream, error=error.to_dict(), delay_s=round(wait_s, 3))
        self.rt.observer.waited(self.endpoint, reason, wait_s)
        return {"outcome": "waiting", "reason": reason, "delay_s": wait_s}

    def gate_for(self) -> CapacityGate:
        gate = getattr(self, "gate", None)
        if gate is None:
            gate = self.gate = CapacityGate(self.rt, self.spec, self.provider_name, self.model, self.rt.keys.job(self.job_id))
        return gate

    def _failover(self, error: ProviderError, spill: bool = False, to_index: Optional[int] = None) -> Dict[str, Any]:
        next_index = self.target_index + 1 if to_index is None else to_index
        next_target = self.targets[next_index]
        next_provider = next_target.split(":", 1)[0]
        token = new_token()
        moved = self.rt.store.move(
            self.job_id, self.token, token, status=JobStatus.QUEUED, target_index=next_index, attempt=1,
            # Stays in inflight until the message is sent, so a crash here is recovered.
            deadline=time.time() + self.rt.settings.lease_ttl_s, batch_id=self.batch_id,
            counter="spilled" if spill else "failed_over",
        )
        if not moved:
            raise Ignore()
        # A spill is not a failure: the job moved to a target with room.
        self._emit("spill" if spill else "failover", store=self.stream, error=error.to_dict(), to=next_target)
        self.rt.app.send_task(
            TASK_NAME,
            args=(self.job_id, self.spec),
            kwargs={"target_index": next_index, "attempt": 1, "token": token},
            task_id=self.job_id,
            **route(self.rt.keys, self.spec, next_index),  # same lane on the next queue
        )
        self.rt.store.release(self.job_id, token)
        self.rt.observer.failed_over(self.provider_name, next_provider)
        return {"outcome": "spill" if spill else "failover", "from": self.targets[self.target_index], "to": next_target}

    def _fail(self, error: ProviderError, reason: Optional[str] = None) -> Dict[str, Any]:
        summary = {
            "message": f"all {len(self.targets)} target(s) failed; last: {error}",
            "category": error.category.value,
            "last_error": error.to_dict(),
        }
        if reason:
            summary["reason"] = reason
        pipe = self.rt.redis.pipeline(transaction=False)
        self.rt.store.finish(self.job_id, status=JobStatus.FAILED, payload=summary, batch_id=self.batch_id,
                             token=self.token, pipe=pipe, event_follows=True)
        pipe.lpush(self.rt.keys.dead_letter, self.job_id)
        self._emit("error", store=self.stream, pipe=pipe, error=summary)
        finished, *_ = pipe.execute()
        if not finished:
            raise Ignore()
        self.rt.observer.job_finished("dead_lettered")
        raise JobFailed(summary["message"])

    def _finish_cancelled(self, message: str = "cancelled while running") -> Dict[str, Any]:
        pipe = self.rt.redis.pipeline(transaction=False)
        self.rt.store.finish(self.job_id, status=JobStatus.CANCELLED, payload={"message": message},
                             batch_id=self.batch_id, token=self.token, pipe=pipe, event_follows=True)
        self._emit("cancelled", store=True, pipe=pipe)
        pipe.execute()
        return {"outcome": "cancelled"}

    # --- helpers -----------------------------------------------------------------

    def _delivery_tag(self) -> Optional[str]:
        properties = getattr(getattr(self.task, "request", None), "properties", None) or {}
        return properties.get("delivery_tag")

    def _emit(self, event_type: str, *, store: bool, pipe: Any = None, **fields: Any) -> None:
        body = {"provider": self.provider_name, "target_index": self.target_index, **fields}
        self.rt.events.publish(self.job_id, event_type, attempt=self.attempt, store=store, pipe=pipe, **body)

    def _attempt_record(self, elapsed_s: float, *, outcome: str, error: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        return {
            "target": self.targets[self.target_index] if self.target_index < len(self.targets) else None,
            "provider": self.provider_name,
            "model": self.model,
            "attempt": self.attempt,
            "worker": self.rt.worker_name,
            "outcome": outcome,
            "elapsed_s": round(elapsed_s, 4),
            "finished_at": time.time(),
            "error": error,
        }
