"""The one task: run a job on its current target, then retry, fail over or finish.

    run_job(job_id, spec, target_index, attempt, token)
      │ token stale / job finished ─────────────────────────▶ dropped (no provider call)
      │ circuit open (per provider:model) ──────────┐
      │ no budget (tasks.limiter) ──▶ waiting in Redis (tasks.deferral), no attempt spent
      ▼                                             │
    provider call ──▶ success ──▶ record result, `done` event, pacing learns
      │ ProviderError                               │
      ├─ 429 ──▶ everyone pauses (tasks.pacing); waiting in Redis, no retry spent, no circuit
      ├─ retryable, retries left ──▶ waiting in Redis for the backoff (retry_after, capped, jittered)
      ├─ otherwise, a next target ◀─────────────────┘──▶ same job id, next provider's queue
      └─ no target left ──▶ failed, every attempt recorded, dead-letter list

Waiting for capacity ends at the job's deadline (`rate_limited`), never
by spending `max_retries`, which counts real failures only.

Before any move the record gets a fresh token, then the message is sent: so
exactly one message for a job is ever runnable (see tasks.store).
"""

from __future__ import annotations

import logging
import random
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from celery import Celery
from celery.exceptions import Ignore, Reject

from promptq.providers.backoff import retry_delay_s
from promptq.providers.base import ProviderResult
from promptq.providers.error_handling import ErrorCategory, ProviderError

from . import reliable_fetch, test_hooks
from .capacity import CapacityGate
from .limiter import Admission
from .chunk_relay import ChunkRelay
from .keys import TASK_NAME
from .lanes import route
from .limits import scope_key
from .pricing import NANO
from .redis_wait import is_transient, wait_for_redis
from .runtime import Runtime, get_runtime
from .store import JobStatus, new_token, start_verdict

logger = logging.getLogger(__name__)


class JobFailed(Exception):
    """Raised so Celery and Flower show the job's final failure as a failure."""


class JobCancelled(Exception):
    """A running job was cancelled between two chunks."""


def register_tasks(app: Celery) -> Any:
    """Define `run_job` on `app` (no module-level app, so nothing connects on import)."""

    @app.task(
        name=TASK_NAME,
        # This app's own: a shared task would be added to every Celery app
        # the process builds later (one per Client), each keeping the first.
        shared=False,
        bind=True,
        acks_late=True,
        reject_on_worker_lost=True,
        ignore_result=True,
        max_retries=None,
    )
    def run_job(self, job_id: str, spec: Dict[str, Any], target_index: int = 0, attempt: int = 1, token: str = ""):
        return JobRun(get_runtime(self.app), self, job_id, spec, target_index, attempt, token).run()

    return run_job


class JobRun:
    """One delivery of one job."""

    def __init__(self, rt: Runtime, task: Any, job_id: str, spec: Dict[str, Any], target_index: int, attempt: int, token: str):
        self.rt = rt
        self.task = task
        self.job_id = job_id
        self.spec = spec
        self.targets: List[str] = list(spec.get("targets") or [])
        self.target_index = target_index
        self.attempt = attempt
        self.token = token
        self.batch_id: Optional[str] = spec.get("batch_id")
        self.stream = bool(spec.get("stream"))
        self.streamed_any = False
        provider, _, model = (self.targets[target_index] if target_index < len(self.targets) else ":").partition(":")
        self.provider_name, self.model = provider, model
        # Circuits, budgets and pacing are per endpoint: one failing (or busy)
        # model must not hold back its siblings behind the same provider.
        self.endpoint = scope_key(provider, model)

    # --- the whole story ----------------------------------------------------

    def run(self) -> Dict[str, Any]:
        # Registered before the store lets it start: a cancel that finds it
        # running is then always heard here (tasks.cancel).
        with self.rt.cancels.running(self.job_id):
            return self._run()

    def _run(self) -> Dict[str, Any]:
        verdict, allow, first = self._start()
        if verdict != "run":
            allow.release()  # no call: a half-open probe claimed for it goes back
            self._give_back(first)
            # Redelivered after success, superseded by a newer message, or
            # cancelled: acknowledge and do nothing, above all no provider call.
            logger.info("job %s: delivery dropped (%s)", self.job_id, verdict)
            raise Ignore()
        self.rt.leases.add(self.job_id)
        try:
            allowed = allow.answer()
            self._remember_circuit(allow)
            if not allowed:
                self._give_back(first)
                return self._handle_error(self.rt.health.circuit_open_error(self.endpoint), 0.0)
            gate = self.gate_for()
            # Asked before booking a turn here: a job that leaves must not
            # lengthen this target's line for the jobs that stay.
            spill_to = gate.spill_target(self.targets, self.target_index) if first is None else None
            if spill_to is not None:
                allow.release()
                why = gate.rate_limited_error("a later target has capacity sooner")
                return self._failover(why, spill=True, to_index=spill_to)
            admission = gate.admit(first)
            if not admission.granted:
                allow.release()  # waiting is not a call: a claimed probe goes back
                return self._wait(admission.wait_s, reason=admission.reason)
            started = time.monotonic()
            try:
                result = self._call()
            except Exception as exc:
                if isinstance(exc, JobCancelled) or self.job_id in self.rt.cancels.cancelled:
                    # The error, if any, is the abandoned call's (tasks.cancel).
                    self.rt.limiter.settle(admission, None, self.endpoint)
                    return self._finish_cancelled()
                if isinstance(exc, ProviderError):
                    error = exc
                else:  # a bug must fail the attempt, not the worker
                    error = self._unexpected(exc)
            else:
                return self._succeed(result, time.monotonic() - started, admission)
            self.rt.limiter.settle(admission, None, self.endpoint)
            return self._handle_error(error, time.monotonic() - started)
        finally:
            self.rt.leases.discard(self.job_id)

    def _unexpected(self, exc: Exception) -> ProviderError:
        logger.exception("job %s: unexpected error calling %s", self.job_id, self.provider_name)
        return ProviderError(
            f"{self.provider_name} call raised {type(exc).__name__}: {exc}",
            category=ErrorCategory.UNKNOWN,
            provider=self.provider_name,
            retryable=False,
        )

    def _start(self) -> Tuple[str, Any, Optional[Callable[[], Admission]]]:
        """The store's verdict on this delivery, the circuit's answer, and maybe the first admission.

        The admission is asked in the same round trip when this endpoint's
        circuit was closed last time this process asked and the job cannot
        spill (a spill is judged before a turn is booked). Otherwise it is
        asked later, after the circuit: an open circuit must not book turns.

        Redis down, restarting or full: wait for it (one log line per try),
        since without it nothing can run anyway. Any other error: the
        message goes back to the queue (Reject with requeue) rather than
        being acknowledged as a failure, which would lose a job that never ran.
        """
        test_hooks.pause("before_start", self.job_id)
        early = self.endpoint in self.rt.closed_circuits and not self.gate_for().may_spill(
            self.targets, self.target_index)

        def claim() -> Tuple[str, Any, Optional[Callable[[], Admission]]]:
            # One round trip: claim the job, ask the endpoint's circuit (and its budgets).
            pipe = self.rt.redis.pipeline(transaction=False)
            self.rt.store.start(self.job_id, self.token, self.rt.worker_name, self.rt.settings.lease_ttl_s,
                                self.batch_id, pipe=pipe)
            allow = self.rt.health.queue_allow_request(self.endpoint, pipe)
            answer = self.gate_for().admit_in(pipe) if early else None
            started_reply, allow_reply, *admit_reply = self.rt.round_trips.execute(pipe)
            for reply in (started_reply, allow_reply, *admit_reply):
                if isinstance(reply, Exception) and is_transient(reply):
                    raise reply  # e.g. OOM inside the script: the whole claim again
            allow.reply = allow_reply
            first = (lambda: answer(admit_reply[0])) if answer is not None else None
            # Claiming twice (a retried round trip) is harmless: same token, same verdict.
            return start_verdict(started_reply), allow, first

        try:
            return wait_for_redis(claim, f"job {self.job_id}: start")
        except Exception as exc:
            logger.error("job %s: could not start (%s: %s); message requeued", self.job_id, type(exc).__name__, exc)
            raise Reject(exc, requeue=True) from exc

    def _remember_circuit(self, allow: Any) -> None:
        """Closed (not a half-open probe, not an outage): the next job here may ask its budget early."""
        if allow.closed:
            self.rt.closed_circuits.add(self.endpoint)
        else:
            self.rt.closed_circuits.discard(self.endpoint)

    def _give_back(self, first: Optional[Callable[[], Admission]]) -> None:
        """An admission asked early for a call that will not be made: its concurrency goes back.

        (A request-rate turn it took stays taken: at most one per process
        each time a circuit opens, or per dropped duplicate delivery.)"""
        if first is None:
            return
        try:
            self.rt.limiter.settle(first(), None, self.endpoint)
        except Exception as exc:  # noqa: BLE001 - a lease left behind expires on its own
            logger.warning("job %s: could not give back an early admission (%s)", self.job_id, exc)

    # --- the call -------------------------------------------------------------

    def _call(self) -> ProviderResult:
        provider = self.rt.provider(self.provider_name)
        args = dict(
            model=self.model,
            prompt=self.spec.get("prompt"),
            system_prompt=self.spec.get("system_prompt"),
            parameters=self.spec.get("parameters") or None,
            messages=self.spec.get("messages"),
        )
        if not self.stream:
            return provider.complete(**args)
        stream = provider.stream(**args)
        # Chunk events go out from this thread, one per socket read of the
        # provider's answer (tasks.chunk_relay). A cancel arrives by pub/sub
        # (tasks.cancel), so the relay need not read the cancel flag.
        relay = ChunkRelay(self.rt.events, self.job_id, attempt=self.attempt, provider=self.provider_name,
                           target_index=self.target_index)
        try:
            for texts in stream.batches():
                text = texts[0] if len(texts) == 1 else "".join(texts)
                if not text:
                    continue
                # Set first: a failure after this point emits `reset` (the
                # subscriber must discard this attempt's text), even if this
                # very send failed half-way.
                self.streamed_any = True
                relay.send(text, len(texts))
                if self.job_id in self.rt.cancels.cancelled:  # filled by pub/sub (tasks.cancel): no I/O here
                    raise JobCancelled()
        finally:
            relay.close()
            stream.close()
        return stream.result

    # --- outcomes ---------------------------------------------------------------

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

    def _finish_cancelled(self) -> Dict[str, Any]:
        pipe = self.rt.redis.pipeline(transaction=False)
        self.rt.store.finish(self.job_id, status=JobStatus.CANCELLED, payload={"message": "cancelled while running"},
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
