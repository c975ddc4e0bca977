"""The one task: run a job on its current target, then retry, fail over or finish.

    run_job(job_id, spec, target_index, attempt, token)
      │ token stale / job finished ─────────────────────────▶ dropped (no provider call)
      │ its batch spent its max_cost_usd ───────────────────▶ cancelled (no provider call)
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
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from celery import Celery
from celery.exceptions import Ignore, Reject

from promptq.providers.base import ProviderResult
from promptq.providers.error_handling import ErrorCategory, ProviderError

from . import test_hooks
from .limiter import Admission
from .chunk_relay import ChunkRelay
from .keys import TASK_NAME
from .limits import scope_key
from .redis_wait import is_transient, wait_for_redis
from .runtime import Runtime, get_runtime
from .run_endings import SPEND_LIMIT_MESSAGE, JobEndings
from .store import start_verdict

logger = logging.getLogger(__name__)


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


class JobRun(JobEndings):
    """One delivery of one job: its start and its call (its endings: tasks.run_endings)."""

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
            if verdict == "halted":
                logger.info("job %s: not run, its batch reached its spend limit", self.job_id)
                return self._finish_cancelled(SPEND_LIMIT_MESSAGE)
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
